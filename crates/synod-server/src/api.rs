//! The etcd v3 gRPC services synod serves: KV, Maintenance and Cluster.
//!
//! Each handler does what etcd's `v3rpc` layer does before and after consensus: the quota
//! check, the request checks (from `synod_mvcc::check`, etcd's order), the size limit, then
//! a proposal or a local read, and finally the response header (cluster and member id, raft
//! term, revision). The same handlers serve the JSON gateway.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use synod_api::EtcdError;
use synod_api::etcdserverpb::alarm_request::AlarmAction;
use synod_api::etcdserverpb::{
    AlarmRequest, AlarmResponse, AlarmType, CompactionRequest, CompactionResponse, DefragmentRequest,
    DefragmentResponse, DeleteRangeRequest, DeleteRangeResponse, DowngradeRequest, DowngradeResponse,
    HashKvRequest, HashKvResponse, HashRequest, HashResponse, Member, MemberAddRequest, MemberAddResponse,
    MemberListRequest, MemberListResponse, MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest,
    MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse, MoveLeaderRequest, MoveLeaderResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseHeader, SnapshotRequest, SnapshotResponse,
    StatusRequest, StatusResponse, TxnRequest, TxnResponse, cluster_server, kv_server, maintenance_server,
    request_op,
};
use synod_api::synodpb::{Command, command};
use synod_base::limits;
use synod_mvcc::{Response, check, txn_is_read_only};
use synod_storage::StateStore;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status};

use crate::auth::{self, Admitted, Credentials, Gate, Guard, Guarded};
use crate::config::{Config, Url};
use crate::errors;
use crate::lease::Lessor;
use crate::metrics::{InFlight, Metrics};
use crate::watch::WatchHub;
use synod_consensus::{Consensus, DiskIo, MemberChange, MemberInfo};

/// Bytes per Snapshot message (etcd's `snapshotSendBufferSize`).
const SNAPSHOT_CHUNK_BYTES: usize = 32 * 1024;

/// The etcd version synod reports and behaves as.
pub const ETCD_VERSION: &str = "3.5.0";

#[derive(Clone)]
pub struct Api {
    inner: Arc<Inner>,
}

struct Inner {
    consensus: Consensus,
    state: Arc<StateStore>,
    metrics: Arc<Metrics>,
    lessor: Lessor,
    watch_hub: Arc<WatchHub>,
    watch_progress_interval: Duration,
    max_request_bytes: u64,
    /// Operations allowed in each list of a Txn (`--max-txn-ops`).
    txn_ops_max: usize,
    /// Where client snapshots are staged (the member directory).
    member_dir: std::path::PathBuf,
    quota_backend_bytes: Option<u64>,
    unsafe_local_reads: bool,
    gate: Gate,
}

pub(crate) type Reply<T> = Result<tonic::Response<T>, Status>;

impl Api {
    /// The API of a member; it follows the state's applies for watches from here on.
    pub fn new(
        config: &Config,
        consensus: Consensus,
        state: Arc<StateStore>,
        metrics: Arc<Metrics>,
    ) -> Result<Api, synod_storage::StorageError> {
        if let Some(quota) = config.quota_backend_bytes {
            metrics.quota_backend_bytes.set(quota as i64);
        }
        let lessor = Lessor::new(
            consensus.clone(),
            state.clone(),
            Lessor::min_ttl(config.heartbeat_interval_ms, config.election_timeout_ms),
            config.lease_checkpoint_interval,
        );
        consensus.set_leader_service(Arc::new(lessor.clone()));
        let watch_hub = Arc::new(WatchHub::new());
        state.set_observer(watch_hub.clone())?;
        Ok(Api {
            inner: Arc::new(Inner {
                consensus,
                state,
                metrics,
                lessor,
                watch_hub,
                watch_progress_interval: config.watch_progress_notify_interval,
                max_request_bytes: config.max_request_bytes,
                txn_ops_max: config.txn_ops_max,
                member_dir: config.data_dir.join("member"),
                quota_backend_bytes: config.quota_backend_bytes,
                unsafe_local_reads: config.unsafe_local_reads,
                gate: Gate::new(config.auth_token_ttl),
            }),
        })
    }

    pub fn lessor(&self) -> &Lessor {
        &self.inner.lessor
    }

    pub(crate) fn watch_hub(&self) -> &Arc<WatchHub> {
        &self.inner.watch_hub
    }

    pub(crate) fn watch_progress_interval(&self) -> Duration {
        self.inner.watch_progress_interval
    }

    /// Maintenance.Snapshot: the keyspace, as of one revision, as an etcd snapshot (a bbolt
    /// database with etcd's buckets, which `etcdctl snapshot status` reads and `synodctl
    /// snapshot restore` restores), then its SHA-256 as the last message, as etcd sends it.
    /// The database is staged in an unlinked file in the member directory, so a large state
    /// costs disk, not memory, and nothing is left behind by a crash.
    fn snapshot_stream(&self) -> tokio::sync::mpsc::Receiver<Result<SnapshotResponse, Status>> {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let api = self.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(status) = api.send_snapshot(&tx) {
                let _ = tx.blocking_send(Err(status));
            }
        });
        rx
    }

    fn send_snapshot(
        &self,
        tx: &tokio::sync::mpsc::Sender<Result<SnapshotResponse, Status>>,
    ) -> Result<(), Status> {
        use sha2::Digest as _;
        use std::io::{Read as _, Seek as _};
        let io = |e: std::io::Error| Status::internal(format!("synod: staging the snapshot: {e}"));
        let path =
            self.inner.member_dir.join(format!("client-snapshot-{:016x}.tmp", synod_consensus::random_u64()));
        let mut file =
            std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(io)?;
        std::fs::remove_file(&path).map_err(io)?;
        let (revision, size) = self.inner.state.write_etcd_snapshot(&mut file).map_err(errors::storage)?;
        file.rewind().map_err(io)?;
        let mut hasher = sha2::Sha256::new();
        let mut sent = 0u64;
        let mut buffer = vec![0u8; SNAPSHOT_CHUNK_BYTES];
        let mut header = Some(self.header(revision));
        while sent < size {
            let n = file.read(&mut buffer).map_err(io)?;
            if n == 0 {
                return Err(Status::internal("synod: the staged snapshot ended early"));
            }
            hasher.update(&buffer[..n]);
            sent += n as u64;
            let chunk = SnapshotResponse {
                header: header.take(),
                remaining_bytes: size - sent,
                blob: buffer[..n].to_vec(),
                ..Default::default()
            };
            if tx.blocking_send(Ok(chunk)).is_err() {
                return Ok(());
            }
        }
        let checksum = SnapshotResponse {
            header: None,
            remaining_bytes: 0,
            blob: hasher.finalize().to_vec(),
            ..Default::default()
        };
        let _ = tx.blocking_send(Ok(checksum));
        Ok(())
    }

    pub(crate) fn max_request_bytes(&self) -> u64 {
        self.inner.max_request_bytes
    }

    /// Blocking storage work on a runtime worker: tells tokio to move other tasks away
    /// first. The simulator's one thread has no other worker, and runs it in place.
    pub(crate) fn blocking<T>(&self, work: impl FnOnce() -> T) -> T {
        match self.inner.consensus.disk_io() {
            DiskIo::Threads => tokio::task::block_in_place(work),
            DiskIo::Inline => work(),
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn metrics_handle(&self) -> Arc<Metrics> {
        self.inner.metrics.clone()
    }

    pub fn consensus(&self) -> &Consensus {
        &self.inner.consensus
    }

    /// Brings the gauges that mirror consensus and storage state up to date, before a
    /// scrape.
    pub fn refresh_metrics(&self) {
        let m = &self.inner.metrics;
        let status = self.inner.consensus.status();
        m.has_leader.set(i64::from(status.leader.is_some()));
        m.is_learner.set(i64::from(status.is_learner));
        m.is_leader.set(i64::from(status.leader == Some(self.inner.consensus.member_id())));
        m.proposals_committed.set(status.commit_index as i64);
        m.proposals_applied.set(status.applied_index as i64);
        m.log_first_index.set(status.first_log_index as i64);
        m.snapshots_installed.set(status.snapshots_installed as i64);
        let stats = self.inner.state.stats();
        m.db_size_bytes.set(stats.size_bytes as i64);
        m.debugging_db_size_bytes.set(stats.size_bytes as i64);
        m.db_size_in_use_bytes.set(stats.in_use_bytes as i64);
        if let Ok(revision) = self.inner.state.current_revision() {
            m.current_revision.set(revision);
        }
        if let Ok(sessions) = self.inner.state.counter_session_count() {
            m.counter_sessions.set(sessions as i64);
        }
    }

    pub fn state(&self) -> &StateStore {
        &self.inner.state
    }

    pub fn state_handle(&self) -> Arc<StateStore> {
        self.inner.state.clone()
    }

    /// A response header: this member, the raft term, and `revision` (the current store
    /// revision when 0, as etcd's `header.fill` does).
    pub fn header(&self, revision: i64) -> ResponseHeader {
        let consensus = &self.inner.consensus;
        let revision =
            if revision == 0 { self.inner.state.current_revision().unwrap_or(0) } else { revision };
        ResponseHeader {
            cluster_id: consensus.cluster_id(),
            member_id: consensus.member_id(),
            revision,
            raft_term: consensus.term(),
        }
    }

    /// The header of the Cluster API's responses: etcd's `ClusterServer` leaves the
    /// revision out.
    fn cluster_header(&self) -> ResponseHeader {
        ResponseHeader { revision: 0, ..self.header(1) }
    }

    pub(crate) fn fill(&self, header: &mut Option<ResponseHeader>) {
        let revision = header.as_ref().map_or(0, |h| h.revision);
        *header = Some(self.header(revision));
    }

    /// Proposes a command after etcd's size check and returns its applied outcome.
    /// Proposes a client's write: it carries the user it was admitted for, whom applying it
    /// checks again. Outside a client request it is the member's own write.
    pub(crate) async fn propose(&self, mut command: Command) -> Result<Response, Status> {
        if let Ok(admitted) = auth::admitted() {
            command.from_client = true;
            command.auth_user = admitted.map(|a| a.user).unwrap_or_default();
        }
        self.propose_as_member(command).await
    }

    /// Proposes a command as it is, with etcd's size check: the member's own writes.
    async fn propose_as_member(&self, command: Command) -> Result<Response, Status> {
        let encoded = command.encode_to_vec();
        if encoded.len() as u64 > self.inner.max_request_bytes {
            return Err(EtcdError::RequestTooLarge.into());
        }
        drop(encoded);
        let metrics = &self.inner.metrics;
        // Pending until it is applied or fails, also when the caller goes away meanwhile.
        let _pending = InFlight::new(metrics.proposals_pending.clone());
        let outcome = self.inner.consensus.propose(command).await.map_err(|e| {
            metrics.proposals_failed.inc();
            errors::consensus(e)
        })?;
        outcome.map_err(Status::from)
    }

    /// etcd's quota check, made before anything else for writes that add data: if the
    /// state file would outgrow the quota, raise the NOSPACE alarm and refuse.
    pub(crate) async fn check_quota(&self, cost: u64) -> Result<(), Status> {
        let Some(quota) = self.inner.quota_backend_bytes else {
            return Ok(());
        };
        if cost == 0 || self.inner.state.stats().size_bytes + cost < quota {
            return Ok(());
        }
        let alarm = AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: self.inner.consensus.member_id(),
            alarm: AlarmType::Nospace as i32,
        };
        // The member raises the alarm, whoever's write found the quota full.
        let raise = Command { op: Some(command::Op::Alarm(alarm)), ..Default::default() };
        if let Err(e) = self.propose_as_member(raise).await {
            tracing::warn!(error = %e, "could not raise the NOSPACE alarm");
        }
        Err(EtcdError::NoSpace.into())
    }

    pub(crate) async fn linearizable(&self, serializable: bool) -> Result<(), Status> {
        if serializable || self.inner.unsafe_local_reads {
            return Ok(());
        }
        self.inner.consensus.read_barrier().await.map_err(errors::consensus)
    }

    /// Serves one unary call: etcd's `hasleader` check, then the handler.
    pub(crate) async fn unary<Req: ServedByLearner + Guarded, T, F>(
        &self,
        request: Request<Req>,
        handler: impl FnOnce(Req) -> F,
    ) -> Reply<T>
    where
        F: std::future::Future<Output = Result<T, Status>>,
    {
        match self.admit(request.get_ref(), &Credentials::from(&request)) {
            Ok(admitted) => {
                auth::run_as(admitted, handler(request.into_inner())).await.map(tonic::Response::new)
            }
            Err(e) => Err(e),
        }
    }

    /// etcd's unary interceptor: a learner serves only what it can answer alone, and a
    /// request with `hasleader` fails at once when no leader is known; then auth: the
    /// caller must be allowed what the request needs. Returns who it was admitted as.
    pub(crate) fn admit<Req: ServedByLearner + Guarded>(
        &self,
        request: &Req,
        credentials: &Credentials,
    ) -> Result<Option<Admitted>, Status> {
        let consensus = &self.inner.consensus;
        if !request.served_by_learner() && consensus.is_learner() {
            return Err(EtcdError::NotSupportedForLearner.into());
        }
        if credentials.require_leader && consensus.leader().is_none() {
            return Err(EtcdError::NoLeader.into());
        }
        // With auth off (the common case) nothing is asked of the request: its guard, which
        // copies every key it names, is made only when auth is on.
        if !self.inner.state.auth_enabled().map_err(errors::storage)? {
            return Ok(None);
        }
        let user = self.check(&request.guard(), credentials)?;
        Ok(user.map(|user| Admitted { user, credentials: credentials.clone() }))
    }

    /// A linearizable read checks its caller again once this member has caught up: a
    /// permission revoked or a password changed before the read began refuses it, even on
    /// a member that had not applied the change when it admitted the read.
    fn recheck(&self, guard: &Guard) -> Result<(), Status> {
        match auth::admitted() {
            Ok(Some(admitted)) => self.check(guard, &admitted.credentials).map(drop),
            _ => Ok(()),
        }
    }

    /// Whether `credentials` may do what `guard` asks, by the auth state now.
    pub(crate) fn check(&self, guard: &Guard, credentials: &Credentials) -> Result<Option<String>, Status> {
        let state = &self.inner.state;
        // A lease's keys are read first, not under the auth read (a second read lock taken
        // while a writer waits would deadlock); a lease that is gone has no keys.
        let lease_keys = match guard {
            Guard::LeaseKeys(id, _) => {
                state.lease(*id).map_err(errors::storage)?.map(|lease| lease.keys.into_iter().collect())
            }
            _ => None,
        };
        state
            .auth(|auth| self.inner.gate.check(auth, credentials, guard, lease_keys.unwrap_or_default()))
            .map_err(errors::storage)?
            .map_err(Status::from)
    }

    pub(crate) fn gate(&self) -> &Gate {
        &self.inner.gate
    }

    fn members(&self) -> Vec<Member> {
        self.inner.consensus.members().into_iter().map(member).collect()
    }

    pub async fn range(&self, request: RangeRequest) -> Result<RangeResponse, Status> {
        check::range(&request)?;
        self.linearizable(request.serializable).await?;
        if !request.serializable {
            self.recheck(&request.guard())?;
        }
        let mut response = self.blocking(|| self.inner.state.range(&request)).map_err(errors::storage)??;
        self.fill(&mut response.header);
        Ok(response)
    }

    pub async fn put(&self, request: PutRequest) -> Result<PutResponse, Status> {
        self.check_quota(put_cost(&request)).await?;
        check::put(&request)?;
        match self.propose(Command { op: Some(command::Op::Put(request)), ..Default::default() }).await? {
            Response::Put(mut response) => {
                self.fill(&mut response.header);
                Ok(response)
            }
            _ => Err(errors::unexpected("put")),
        }
    }

    pub async fn delete_range(&self, request: DeleteRangeRequest) -> Result<DeleteRangeResponse, Status> {
        check::delete_range(&request)?;
        match self
            .propose(Command { op: Some(command::Op::DeleteRange(request)), ..Default::default() })
            .await?
        {
            Response::DeleteRange(mut response) => {
                self.fill(&mut response.header);
                Ok(response)
            }
            _ => Err(errors::unexpected("delete range")),
        }
    }

    pub async fn txn(&self, request: TxnRequest) -> Result<TxnResponse, Status> {
        self.check_quota(txn_cost(&request)).await?;
        check::txn(&request, self.inner.txn_ops_max)?;
        let mut response = if txn_is_read_only(&request) {
            let serializable = request.success.iter().chain(&request.failure).all(
                |op| matches!(&op.request, Some(request_op::Request::RequestRange(r)) if r.serializable),
            );
            self.linearizable(serializable).await?;
            if !serializable {
                self.recheck(&request.guard())?;
            }
            self.blocking(|| self.inner.state.read_txn(&request)).map_err(errors::storage)??
        } else {
            match self.propose(Command { op: Some(command::Op::Txn(request)), ..Default::default() }).await? {
                Response::Txn(response) => response,
                _ => return Err(errors::unexpected("txn")),
            }
        };
        self.fill(&mut response.header);
        Ok(response)
    }

    pub async fn compact(&self, request: CompactionRequest) -> Result<CompactionResponse, Status> {
        let physical = request.physical;
        let mut response = match self
            .propose(Command { op: Some(command::Op::Compaction(request)), ..Default::default() })
            .await?
        {
            Response::Compaction(response) => response,
            _ => return Err(errors::unexpected("compaction")),
        };
        // Compaction drops history from the index (a slice of keys in its apply, the rest
        // in steps after it) and then deletes the records, a batch at a time. `physical`,
        // as in etcd, waits for all of it to finish, and makes it durable before the reply.
        if physical {
            let pause = Duration::from_millis(synod_base::limits::RECLAIM_PAUSE_MS);
            while self.inner.state.compacting().map_err(errors::storage)? {
                tokio::time::sleep(pause).await;
            }
            let consensus = self.inner.consensus.clone();
            self.blocking(move || consensus.checkpoint()).map_err(errors::consensus)?;
        }
        // etcd reports the revision at reply time.
        response.header = None;
        self.fill(&mut response.header);
        Ok(response)
    }

    pub async fn status(&self, _request: StatusRequest) -> Result<StatusResponse, Status> {
        let status = self.inner.consensus.status();
        let stats = self.inner.state.stats();
        let alarms = self.inner.state.alarms().map_err(errors::storage)?;
        Ok(StatusResponse {
            header: Some(self.header(0)),
            version: ETCD_VERSION.to_string(),
            db_size: stats.size_bytes as i64,
            leader: status.leader.unwrap_or(0),
            raft_index: status.commit_index,
            raft_term: status.term,
            raft_applied_index: status.applied_index,
            // etcd prints each raised alarm in protobuf text form.
            // etcd reports a missing leader, then each raised alarm in protobuf text form.
            errors: status
                .leader
                .is_none()
                .then(|| EtcdError::NoLeader.message().to_string())
                .into_iter()
                .chain(alarms.iter().map(|a| {
                    let name = AlarmType::try_from(a.alarm).map_or("UNKNOWN", |t| t.as_str_name());
                    format!("memberID:{} alarm:{} ", a.member_id, name)
                }))
                .collect(),
            db_size_in_use: stats.in_use_bytes as i64,
            is_learner: status.is_learner,
            storage_version: String::new(),
            db_size_quota: self.inner.quota_backend_bytes.map_or(0, |q| q as i64),
            downgrade_info: None,
        })
    }

    pub async fn alarm(&self, request: AlarmRequest) -> Result<AlarmResponse, Status> {
        let mut response = match AlarmAction::try_from(request.action) {
            Ok(AlarmAction::Get) => {
                self.linearizable(false).await?;
                let alarms = self.inner.state.alarms().map_err(errors::storage)?;
                let wanted = request.alarm;
                AlarmResponse {
                    header: None,
                    alarms: alarms
                        .into_iter()
                        .filter(|a| wanted == AlarmType::None as i32 || a.alarm == wanted)
                        .collect(),
                }
            }
            _ => match self
                .propose(Command { op: Some(command::Op::Alarm(request)), ..Default::default() })
                .await?
            {
                Response::Alarm(response) => response,
                _ => return Err(errors::unexpected("alarm")),
            },
        };
        self.fill(&mut response.header);
        Ok(response)
    }

    pub async fn defragment(&self, _request: DefragmentRequest) -> Result<DefragmentResponse, Status> {
        let state = self.inner.state.clone();
        tracing::info!("starting defragment");
        self.blocking(move || state.defragment(Duration::from_secs(30))).map_err(errors::storage)?;
        let stats = self.inner.state.stats();
        self.inner.metrics.db_size_bytes.set(stats.size_bytes as i64);
        tracing::info!(size_bytes = stats.size_bytes, "finished defragment");
        // etcd returns this response without a header, and clients test for that.
        Ok(DefragmentResponse { header: None })
    }

    pub async fn member_add(&self, request: MemberAddRequest) -> Result<MemberAddResponse, Status> {
        let peer_urls = checked_peer_urls(&request.peer_ur_ls)?;
        let change = MemberChange::Add { peer_urls: peer_urls.clone(), is_learner: request.is_learner };
        let (added, members) =
            self.inner.consensus.change_membership(change).await.map_err(errors::consensus)?;
        let id = added.ok_or_else(|| errors::unexpected("member add"))?;
        let member = Member {
            id,
            name: String::new(),
            peer_ur_ls: peer_urls,
            client_ur_ls: Vec::new(),
            is_learner: request.is_learner,
        };
        Ok(MemberAddResponse {
            header: Some(self.cluster_header()),
            member: Some(member),
            members: members.into_iter().map(self::member).collect(),
        })
    }

    pub async fn member_remove(&self, request: MemberRemoveRequest) -> Result<MemberRemoveResponse, Status> {
        let (_, members) = self
            .inner
            .consensus
            .change_membership(MemberChange::Remove(request.id))
            .await
            .map_err(errors::consensus)?;
        Ok(MemberRemoveResponse {
            header: Some(self.cluster_header()),
            members: members.into_iter().map(member).collect(),
        })
    }

    pub async fn member_update(&self, request: MemberUpdateRequest) -> Result<MemberUpdateResponse, Status> {
        let peer_urls = checked_peer_urls(&request.peer_ur_ls)?;
        let change = MemberChange::Update { id: request.id, peer_urls };
        let (_, members) = self.inner.consensus.change_membership(change).await.map_err(errors::consensus)?;
        Ok(MemberUpdateResponse {
            header: Some(self.cluster_header()),
            members: members.into_iter().map(member).collect(),
        })
    }

    pub async fn member_promote(
        &self,
        request: MemberPromoteRequest,
    ) -> Result<MemberPromoteResponse, Status> {
        let (_, members) = self
            .inner
            .consensus
            .change_membership(MemberChange::Promote(request.id))
            .await
            .map_err(errors::consensus)?;
        Ok(MemberPromoteResponse {
            header: Some(self.cluster_header()),
            members: members.into_iter().map(member).collect(),
        })
    }

    pub async fn move_leader(&self, request: MoveLeaderRequest) -> Result<MoveLeaderResponse, Status> {
        self.inner.consensus.transfer_leadership(request.target_id).await.map_err(errors::consensus)?;
        // etcd returns this response without a header, and clients test for that.
        Ok(MoveLeaderResponse { header: None })
    }

    pub async fn hash_kv(&self, request: HashKvRequest) -> Result<HashKvResponse, Status> {
        let (hash, compact_revision, hash_revision) =
            self.blocking(|| self.inner.state.hash_kv(request.revision)).map_err(errors::storage)??;
        Ok(HashKvResponse { header: Some(self.header(0)), hash, compact_revision, hash_revision })
    }

    pub async fn hash(&self, _request: HashRequest) -> Result<HashResponse, Status> {
        let (hash, _, _) = self.blocking(|| self.inner.state.hash_kv(0)).map_err(errors::storage)??;
        Ok(HashResponse { header: Some(self.header(0)), hash })
    }

    pub async fn member_list(&self, request: MemberListRequest) -> Result<MemberListResponse, Status> {
        if request.linearizable {
            self.linearizable(false).await?;
        }
        Ok(MemberListResponse { header: Some(self.cluster_header()), members: self.members() })
    }
}

/// etcd's quota cost of a put: what it adds to the file, roughly.
fn put_cost(request: &PutRequest) -> u64 {
    limits::QUOTA_KV_OVERHEAD_BYTES + request.key.len() as u64 + request.value.len() as u64
}

/// etcd's quota cost of a txn: the larger of its branches' top-level puts.
fn txn_cost(request: &TxnRequest) -> u64 {
    let branch = |ops: &[synod_api::etcdserverpb::RequestOp]| -> u64 {
        ops.iter()
            .filter_map(|op| match &op.request {
                Some(request_op::Request::RequestPut(p)) => Some(put_cost(p)),
                _ => None,
            })
            .sum()
    };
    branch(&request.success).max(branch(&request.failure))
}

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!("synod does not serve {what} yet"))
}

/// Whether a learner may serve a request: in etcd, serializable reads and Status only.
pub(crate) trait ServedByLearner {
    fn served_by_learner(&self) -> bool {
        false
    }
}

impl ServedByLearner for RangeRequest {
    fn served_by_learner(&self) -> bool {
        self.serializable
    }
}

impl ServedByLearner for StatusRequest {
    fn served_by_learner(&self) -> bool {
        true
    }
}

impl ServedByLearner for PutRequest {}
impl ServedByLearner for DeleteRangeRequest {}
impl ServedByLearner for TxnRequest {}
impl ServedByLearner for CompactionRequest {}
impl ServedByLearner for AlarmRequest {}
impl ServedByLearner for DefragmentRequest {}
impl ServedByLearner for SnapshotRequest {}
impl ServedByLearner for HashRequest {}
impl ServedByLearner for HashKvRequest {}
impl ServedByLearner for MoveLeaderRequest {}
impl ServedByLearner for MemberAddRequest {}
impl ServedByLearner for MemberRemoveRequest {}
impl ServedByLearner for MemberUpdateRequest {}
impl ServedByLearner for MemberListRequest {}
impl ServedByLearner for MemberPromoteRequest {}

#[tonic::async_trait]
impl kv_server::Kv for Api {
    async fn range(&self, request: Request<RangeRequest>) -> Reply<RangeResponse> {
        self.unary(request, |r| Api::range(self, r)).await
    }

    async fn put(&self, request: Request<PutRequest>) -> Reply<PutResponse> {
        self.unary(request, |r| Api::put(self, r)).await
    }

    async fn delete_range(&self, request: Request<DeleteRangeRequest>) -> Reply<DeleteRangeResponse> {
        self.unary(request, |r| Api::delete_range(self, r)).await
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Reply<TxnResponse> {
        self.unary(request, |r| Api::txn(self, r)).await
    }

    async fn compact(&self, request: Request<CompactionRequest>) -> Reply<CompactionResponse> {
        self.unary(request, |r| Api::compact(self, r)).await
    }
}

#[tonic::async_trait]
impl maintenance_server::Maintenance for Api {
    async fn alarm(&self, request: Request<AlarmRequest>) -> Reply<AlarmResponse> {
        self.unary(request, |r| Api::alarm(self, r)).await
    }

    async fn status(&self, request: Request<StatusRequest>) -> Reply<StatusResponse> {
        self.unary(request, |r| Api::status(self, r)).await
    }

    async fn defragment(&self, request: Request<DefragmentRequest>) -> Reply<DefragmentResponse> {
        self.unary(request, |r| Api::defragment(self, r)).await
    }

    async fn hash(&self, request: Request<HashRequest>) -> Reply<HashResponse> {
        self.unary(request, |r| Api::hash(self, r)).await
    }

    async fn hash_kv(&self, request: Request<HashKvRequest>) -> Reply<HashKvResponse> {
        self.unary(request, |r| Api::hash_kv(self, r)).await
    }

    type SnapshotStream = ReceiverStream<Result<SnapshotResponse, Status>>;

    async fn snapshot(&self, request: Request<SnapshotRequest>) -> Reply<Self::SnapshotStream> {
        self.admit(request.get_ref(), &Credentials::from(&request))?;
        Ok(tonic::Response::new(ReceiverStream::new(self.snapshot_stream())))
    }

    async fn move_leader(&self, request: Request<MoveLeaderRequest>) -> Reply<MoveLeaderResponse> {
        self.unary(request, |r| Api::move_leader(self, r)).await
    }

    async fn downgrade(&self, _request: Request<DowngradeRequest>) -> Reply<DowngradeResponse> {
        Err(not_yet("Downgrade"))
    }
}

#[tonic::async_trait]
impl cluster_server::Cluster for Api {
    async fn member_add(&self, request: Request<MemberAddRequest>) -> Reply<MemberAddResponse> {
        self.unary(request, |r| Api::member_add(self, r)).await
    }

    async fn member_remove(&self, request: Request<MemberRemoveRequest>) -> Reply<MemberRemoveResponse> {
        self.unary(request, |r| Api::member_remove(self, r)).await
    }

    async fn member_update(&self, request: Request<MemberUpdateRequest>) -> Reply<MemberUpdateResponse> {
        self.unary(request, |r| Api::member_update(self, r)).await
    }

    async fn member_list(&self, request: Request<MemberListRequest>) -> Reply<MemberListResponse> {
        self.unary(request, |r| Api::member_list(self, r)).await
    }

    async fn member_promote(&self, request: Request<MemberPromoteRequest>) -> Reply<MemberPromoteResponse> {
        self.unary(request, |r| Api::member_promote(self, r)).await
    }
}

/// A member as etcd's Cluster API describes it.
fn member(info: MemberInfo) -> Member {
    Member {
        id: info.id,
        name: info.name,
        peer_ur_ls: info.peer_urls,
        client_ur_ls: info.client_urls,
        is_learner: info.is_learner,
    }
}

/// Peer URLs from a MemberAdd or MemberUpdate, normalized; etcd's error if any is malformed.
fn checked_peer_urls(urls: &[String]) -> Result<Vec<String>, Status> {
    if urls.is_empty() {
        return Err(EtcdError::MemberBadUrls.into());
    }
    urls.iter()
        .map(|url| Url::parse(url).map(|u| u.to_string()).map_err(|_| Status::from(EtcdError::MemberBadUrls)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_api::etcdserverpb::RequestOp;

    /// Quota costs follow etcd: key + value + 256 per put; a txn costs its larger branch;
    /// deletes and reads cost nothing.
    #[test]
    fn quota_costs() {
        let put = PutRequest { key: b"key".to_vec(), value: vec![0; 100], ..Default::default() };
        assert_eq!(put_cost(&put), 359);
        let op = |p: &PutRequest| RequestOp { request: Some(request_op::Request::RequestPut(p.clone())) };
        let txn = TxnRequest { compare: vec![], success: vec![op(&put), op(&put)], failure: vec![op(&put)] };
        assert_eq!(txn_cost(&txn), 718);
        assert_eq!(txn_cost(&TxnRequest::default()), 0);
    }
}
