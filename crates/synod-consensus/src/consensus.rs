//! [`Consensus`]: the facade the server calls. It hides openraft behind synod's commands,
//! outcomes and etcd errors.
//!
//! - [`Consensus::propose`] replicates a command and returns its applied outcome. On a
//!   follower the command goes to the leader over the peer transport, and the follower
//!   answers once it has applied the entry itself, so a client reads its own writes on the
//!   member it wrote through.
//! - [`Consensus::read_barrier`] makes a following local read linearizable: ReadIndex on the
//!   leader, or the leader's read index and a wait for local apply on a follower.
//! - membership changes (etcd's MemberAdd, MemberRemove, MemberPromote, MemberUpdate) run on
//!   the leader, wherever they arrive.
//!
//! Failures come back as [`ConsensusError`], which the server maps to etcd's errors: no
//! leader, leader changed, request timed out, too many requests. Nothing waits past the
//! request deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{
    ChangeMembershipError, ClientWriteError, ForwardToLeader, LinearizableReadError, RaftError,
};
use openraft::{ChangeMembers, Config, ReadPolicy, SnapshotPolicy};
use prost::Message;
use sha2::{Digest, Sha256};
use synod_api::EtcdError;
use synod_api::synodpb::raft_client::RaftClient;
use synod_api::synodpb::{self as pb, Command, command};
use synod_base::{GroupId, LogIndex, limits};
use synod_mvcc::counter::CounterValue;
use synod_mvcc::{Applied, Response};
use synod_storage::{LogStore, StateStore};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};
// tokio's clock, not std's: the simulator runs on tokio's paused clock.
use tokio::time::Instant;

use crate::batch::{Batcher, RunBatch};
use crate::codec;
use crate::combine::{self, Combiner, WriteOutcome};
use crate::disk_io::DiskIo;
use crate::forward_stream::ForwardLink;
use crate::log_store::RaftLog;
use crate::network::{Dialer, PeerChannel, PeerIdentity, PeerNetwork};
use crate::observer::Observer;
use crate::removed::{REMOVED_MESSAGE, Removed};
use crate::runtime::SynodRuntime;
use crate::state_machine::{StateMachine, member_key};
use crate::types::{MemberNode, Proposal, Raft, TypeConfig};

/// How recently the leader must have heard from a member for etcd's reconfiguration
/// checks to count it as connected (etcd's HealthInterval).
const CONNECTED_WITHIN: Duration = Duration::from_secs(5);
/// etcd allows one learner at a time.
const LEARNERS_MAX: usize = 1;
/// The share of the leader's log a learner must have before it may be promoted.
const LEARNER_READY_FRACTION: f64 = 0.9;

/// Why the consensus layer could not give an outcome.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConsensusError {
    #[error("no leader")]
    NoLeader,
    /// The command may or may not have been applied: the leader changed under it.
    #[error("leader changed")]
    LeaderChanged,
    #[error("request timed out")]
    Timeout,
    #[error("too many requests")]
    TooManyRequests,
    #[error("this member is not the leader")]
    NotLeader,
    #[error("stopped")]
    Stopped,
    /// A request the cluster refuses, with etcd's error.
    #[error("{0}")]
    Etcd(EtcdError),
    #[error("consensus failed: {0}")]
    Failed(String),
}

impl From<EtcdError> for ConsensusError {
    fn from(error: EtcdError) -> Self {
        ConsensusError::Etcd(error)
    }
}

/// How a member starts its consensus group.
#[derive(Clone, Debug)]
pub enum Bootstrap {
    /// A new cluster with exactly these members, every one started with the same list.
    New(BTreeMap<u64, MemberNode>),
    /// A member that already belongs to a cluster: restarting on its data, or joining after
    /// a MemberAdd.
    Existing,
}

/// Everything [`Consensus::start`] needs.
pub struct ConsensusOptions {
    pub group: GroupId,
    pub member_id: u64,
    pub cluster_id: u64,
    pub name: String,
    pub client_urls: Vec<String>,
    pub bootstrap: Bootstrap,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    pub snapshot_count: u64,
    /// Entries kept behind a snapshot so a slow follower catches up from the log.
    pub snapshot_catchup_entries: u64,
    pub max_request_bytes: u64,
    pub snapshot_dir: PathBuf,
    /// The largest snapshot stream this member accepts from a leader (bounds what a peer can
    /// make it build: the state file it fills is of about that size).
    pub snapshot_bytes_max: u64,
    pub log: Arc<LogStore>,
    pub state: Arc<StateStore>,
    /// Told what happens, for metrics ([`NoObserver`](crate::NoObserver) for none).
    pub observer: Arc<dyn Observer>,
    /// How often each peer is probed for its round-trip time (etcd probes every 4 s);
    /// `None` probes nothing (the simulator, whose network is all delays of its own).
    pub probe_interval: Option<Duration>,
    /// How to reach the other members (`GrpcDialer` in a server).
    pub dialer: Arc<dyn Dialer>,
    /// Where blocking disk work runs (`DiskIo::Threads` in a server).
    pub disk_io: DiskIo,
}

/// The consensus view of a member, for MemberList.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
    /// Whether the member has published its name and client URLs (etcd's started member).
    pub started: bool,
}

/// What Status reports.
#[derive(Clone, Copy, Debug)]
pub struct ConsensusStatus {
    pub term: u64,
    pub leader: Option<u64>,
    pub last_log_index: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    /// The first index the log still holds (it moves when the log is purged).
    pub first_log_index: u64,
    /// Snapshots received from a leader and imported since the member started.
    pub snapshots_installed: u64,
    pub is_learner: bool,
}

/// Why one attempt at a membership change on the leader did not complete.
enum Attempt {
    /// Another change is still in progress; this one wrote nothing and may try again.
    Busy,
    Failed(ConsensusError),
}

impl From<ConsensusError> for Attempt {
    fn from(error: ConsensusError) -> Self {
        Attempt::Failed(error)
    }
}

impl From<EtcdError> for Attempt {
    fn from(error: EtcdError) -> Self {
        Attempt::Failed(error.into())
    }
}

/// A membership change, as etcd's Cluster API asks for it.
#[derive(Clone, Debug)]
pub enum MemberChange {
    Add { peer_urls: Vec<String>, is_learner: bool },
    Remove(u64),
    Promote(u64),
    Update { id: u64, peer_urls: Vec<String> },
}

pub(crate) struct Inner {
    pub(crate) raft: Raft,
    pub(crate) observer: Arc<dyn Observer>,
    pub(crate) group: GroupId,
    pub(crate) member_id: u64,
    pub(crate) cluster_id: u64,
    pub(crate) network: PeerNetwork,
    pub(crate) snapshot_bytes_max: u64,
    pub(crate) state: Arc<StateStore>,
    state_machine: StateMachine,
    pub(crate) removed: Removed,
    pending: Arc<Semaphore>,
    failure: watch::Sender<Option<String>>,
    election_timeout: Duration,
    /// openraft's leader lease: a leader serves while a quorum answered it this recently.
    leader_lease: Duration,
    /// The leader this member last accepted an AppendEntries (or heartbeat) from, and when.
    leader_contact: Mutex<Option<(u64, Instant)>>,
    /// What this member found about gone leaders.
    pub(crate) failover: crate::failover::Failover,
    /// Dropping it stops the checkpointer.
    stop_checkpointer: Mutex<Option<watch::Sender<()>>>,
    pub(crate) disk_io: DiskIo,
    /// Answers the calls only a leader can answer, on this member while it leads.
    leader_service: std::sync::OnceLock<Arc<dyn LeaderService>>,
    /// Client writes on their way to each leader, many to a peer call. One batcher per
    /// leader, so that calls stuck on a leader that went silent do not hold up the writes
    /// for its successor.
    forwards: Mutex<BTreeMap<u64, Arc<ForwardBatcher>>>,
    /// The forwarding stream to each leader this member forwards to.
    forward_links: Mutex<BTreeMap<u64, Arc<ForwardLink>>>,
    /// Linearizable reads waiting for a read index, one read index for all that wait.
    reads: Batcher<(), Result<(), ConsensusError>>,
    /// Counter adds waiting for an entry, per key, while this member leads.
    counters: Combiner,
    /// False while a restored state is not yet in a snapshot with the log cut behind it;
    /// membership changes wait for it, so an added member is sent the restored data.
    restore_sealed: watch::Sender<bool>,
}

/// Batches the writes forwarded to one leader.
type ForwardBatcher = Batcher<Forward, Forwarded>;

/// A forwarded write's outcome, sent once this member has applied it too. The batch's
/// forwarding call is over by then: a member whose applies are held up (a defragment)
/// goes on handing writes to the leader meanwhile, as an etcd follower does.
type Forwarded = oneshot::Receiver<Result<Option<Applied>, ConsensusError>>;

/// A client write a follower hands to the leader.
struct Forward {
    leader: u64,
    node: MemberNode,
    command: Command,
    deadline: Instant,
}

/// Forwarded writes in flight to the leader at once, in separate peer calls; more wait and
/// go together in the next call.
const FORWARD_CALLS_MAX: usize = 4;
/// Writes in one forwarding call. With commands of up to the request limit, the call stays
/// within the peer message limit (`message_bytes_max`).
pub(crate) const FORWARD_BATCH_MAX: usize = 64;

/// A call only the leader can answer, and its answer.
pub type LeaderCall = pb::leader_call_request::Call;
pub type LeaderReply = pb::leader_call_response::Reply;

/// What answers [`LeaderCall`]s on the leader: the server's lease keeper. It must fail
/// with [`ConsensusError::NotLeader`] when this member does not lead, so that the caller
/// finds the leader and asks again.
pub trait LeaderService: Send + Sync + 'static {
    fn call(
        &self,
        call: LeaderCall,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<LeaderReply, ConsensusError>> + Send + '_>>;
}

impl Inner {
    pub(crate) fn heard_from_leader(&self, leader: u64) {
        *self.leader_contact.lock().unwrap_or_else(|p| p.into_inner()) = Some((leader, Instant::now()));
    }
}

/// The running consensus group of this member.
#[derive(Clone)]
pub struct Consensus {
    pub(crate) inner: Arc<Inner>,
}

/// Permits of the pending-bytes budget a proposal of `bytes` takes (one per KiB begun).
fn budget_permits(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX)
}

fn etcd_error_from_text(text: &str) -> ConsensusError {
    match EtcdError::from_message(text) {
        Some(EtcdError::NoLeader) => ConsensusError::NoLeader,
        Some(EtcdError::LeaderChanged) => ConsensusError::LeaderChanged,
        Some(EtcdError::Timeout) => ConsensusError::Timeout,
        Some(EtcdError::TooManyRequests) => ConsensusError::TooManyRequests,
        Some(EtcdError::NotLeader) => ConsensusError::NotLeader,
        Some(EtcdError::Stopped) => ConsensusError::Stopped,
        Some(error) => ConsensusError::Etcd(error),
        None => ConsensusError::Failed(text.to_string()),
    }
}

/// The etcd error text a [`ConsensusError`] travels as between members.
pub(crate) fn error_text(error: &ConsensusError) -> String {
    let etcd = match error {
        ConsensusError::NoLeader => EtcdError::NoLeader,
        ConsensusError::LeaderChanged => EtcdError::LeaderChanged,
        ConsensusError::Timeout => EtcdError::Timeout,
        ConsensusError::TooManyRequests => EtcdError::TooManyRequests,
        ConsensusError::NotLeader => EtcdError::NotLeader,
        ConsensusError::Stopped => EtcdError::Stopped,
        ConsensusError::Etcd(e) => *e,
        ConsensusError::Failed(text) => return text.clone(),
    };
    etcd.message().to_string()
}

/// What a failed call to the leader means for the command it carried. A connection that
/// never opened (or a forwarding stream that closed before the batch went) carried nothing
/// (no leader to reach); a deadline is a timeout; anything
/// else may have failed after the leader took the command, so its fate is unknown, which
/// etcd reports as "leader changed".
fn forward_failure(status: &tonic::Status) -> ConsensusError {
    match status.code() {
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => ConsensusError::Timeout,
        tonic::Code::Unavailable if status.message().contains("connect") => ConsensusError::NoLeader,
        _ => ConsensusError::LeaderChanged,
    }
}

/// A member id for a member added at runtime: from its peer URLs, the cluster and a random
/// number (etcd uses the time), so that a member removed and added again gets a new id (a
/// raft member id must never come back with an empty log). The random number comes from
/// openraft's runtime, which the simulator seeds.
fn added_member_id(peer_urls: &[String], cluster_id: u64) -> u64 {
    use rand_openraft::Rng as _;
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let nonce = <SynodRuntime as openraft::AsyncRuntime>::thread_rng().next_u64();
    let mut hasher = Sha256::new();
    hasher.update(urls.join(",").as_bytes());
    hasher.update(cluster_id.to_be_bytes());
    hasher.update(nonce.to_be_bytes());
    u64::from_be_bytes(hasher.finalize()[..8].try_into().expect("32-byte digest"))
}

pub(crate) fn applied_to_result(applied: &Applied) -> pb::ApplyResult {
    use pb::apply_result::Result as R;
    let result = match applied {
        Ok(Response::Put(r)) => R::Put(r.clone()),
        Ok(Response::DeleteRange(r)) => R::DeleteRange(r.clone()),
        Ok(Response::Txn(r)) => R::Txn(r.clone()),
        Ok(Response::Compaction(r)) => R::Compaction(*r),
        Ok(Response::Alarm(r)) => R::Alarm(r.clone()),
        Ok(Response::LeaseGrant(r)) => R::LeaseGrant(r.clone()),
        Ok(Response::LeaseRevoke(r)) => R::LeaseRevoke(*r),
        Ok(Response::LeaseCheckpoints) => R::LeaseCheckpoints(pb::Blank {}),
        Ok(Response::Auth(revision)) => R::Auth(*revision),
        Ok(Response::CounterAdd(results)) => R::CounterAdd(pb::CounterAddResult {
            results: results
                .iter()
                .map(|result| match result {
                    Ok(v) => {
                        pb::CounterOpResult { value: v.value, revision: v.revision, error: String::new() }
                    }
                    Err(e) => pb::CounterOpResult { error: e.message().to_string(), ..Default::default() },
                })
                .collect(),
        }),
        Err(e) => R::Error(e.message().to_string()),
    };
    pb::ApplyResult { result: Some(result) }
}

fn result_to_applied(result: pb::ApplyResult) -> Result<Option<Applied>, ConsensusError> {
    use pb::apply_result::Result as R;
    Ok(match result.result {
        Some(R::Put(r)) => Some(Ok(Response::Put(r))),
        Some(R::DeleteRange(r)) => Some(Ok(Response::DeleteRange(r))),
        Some(R::Txn(r)) => Some(Ok(Response::Txn(r))),
        Some(R::Compaction(r)) => Some(Ok(Response::Compaction(r))),
        Some(R::Alarm(r)) => Some(Ok(Response::Alarm(r))),
        Some(R::LeaseGrant(r)) => Some(Ok(Response::LeaseGrant(r))),
        Some(R::LeaseRevoke(r)) => Some(Ok(Response::LeaseRevoke(r))),
        Some(R::LeaseCheckpoints(_)) => Some(Ok(Response::LeaseCheckpoints)),
        Some(R::Auth(revision)) => Some(Ok(Response::Auth(revision))),
        Some(R::CounterAdd(r)) => {
            let results = r.results.into_iter().map(|result| {
                if result.error.is_empty() {
                    Ok(Ok(CounterValue { value: result.value, revision: result.revision }))
                } else {
                    etcd_error(result.error).map(Err)
                }
            });
            Some(Ok(Response::CounterAdd(results.collect::<Result<_, _>>()?)))
        }
        Some(R::Error(text)) => Some(Err(etcd_error(text)?)),
        Some(R::Nothing(_)) | None => None,
    })
}

/// An error text the leader sent, which must be one synod knows.
fn etcd_error(text: String) -> Result<EtcdError, ConsensusError> {
    EtcdError::from_message(&text).ok_or(ConsensusError::Failed(text))
}

/// The log meta key present while the member's state holds data that no log entry made
/// (a restored snapshot) and the log has not yet been cut behind a snapshot of it.
const UNSEALED_RESTORE_KEY: &str = "unsealed-restore";

/// Whether a state that applied nothing holds data: a restored snapshot's keys or leases.
fn holds_restored_data(state: &StateStore) -> Result<bool, synod_storage::StorageError> {
    Ok(state.applied().is_none() && (state.current_revision()? > 1 || !state.leases()?.is_empty()))
}

impl Consensus {
    /// Starts the member's consensus group on its stores.
    pub async fn start(options: ConsensusOptions) -> Result<Consensus, ConsensusError> {
        let failed = |what: &str, e: &dyn std::fmt::Display| ConsensusError::Failed(format!("{what}: {e}"));
        let election = options.election_timeout_ms;
        let leader_lease_ms = election * 3 / 5;
        // A follower campaigns after hearing nothing for openraft's leader lease (which is
        // `election_timeout_max`) plus a random timeout in [min, max). These bounds make
        // that silence fall in [0.8E, 1.2E) for etcd's --election-timeout E, so a dead
        // leader is replaced about one election timeout after its last heartbeat, as in
        // etcd, with a 0.4E spread so that two followers rarely campaign at once (a split
        // vote costs another round). The server checks E >= 5 heartbeats, as etcd does.
        let config = Config {
            cluster_name: format!("{:x}", options.cluster_id),
            heartbeat_interval: options.heartbeat_interval_ms,
            election_timeout_min: (election / 5).max(options.heartbeat_interval_ms + 1),
            election_timeout_max: leader_lease_ms,
            enable_pre_vote: Some(true),
            // A leader restarted before anyone else campaigns would otherwise take up its
            // leadership again without an election, on a state machine that may lag the
            // commit index it had acknowledged (synod does not sync the committed index), and
            // serve stale reads: synod-chaos caught exactly that. An election makes it learn
            // the commit index first.
            enable_leader_restore: Some(false),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(options.snapshot_count.max(1)),
            max_in_snapshot_log_to_keep: options.snapshot_catchup_entries,
            // Purge on every snapshot, as etcd compacts its log at each one.
            purge_batch_size: options.snapshot_count.clamp(1, 1024),
            max_payload_entries: 64,
            install_snapshot_timeout: 10_000,
            // Apply commands queue here while the state machine is held up (a defragment
            // holds applies for seconds); when the queue is full openraft's core waits, and
            // a leader that waits sends no heartbeats. Each command is a few words.
            state_machine_channel_size: Some(1 << 16),
            ..Default::default()
        }
        .validate()
        .map_err(|e| failed("consensus configuration", &e))?;
        let flushed = options.observer.clone();
        let on_flush: crate::log_store::FlushObserver =
            Arc::new(move |elapsed, entries| flushed.log_flushed(elapsed, entries));
        let log = RaftLog::open(options.log.clone(), options.group, Some(on_flush), options.disk_io)
            .map_err(|e| failed("open the raft log", &e))?;
        let removed = Removed::new(options.member_id);
        let state_machine = StateMachine::open(
            options.state.clone(),
            options.group,
            &options.snapshot_dir,
            removed.clone(),
            options.disk_io,
        )
        .map_err(|e| failed("open the state machine", &e))?;
        // An AppendEntries carries up to `max_payload_entries` entries of up to a request
        // each; a snapshot chunk is small.
        let message_bytes_max = (64 * (options.max_request_bytes as usize + 4096)).max(16 * 1024 * 1024);
        let network = PeerNetwork::new(
            PeerIdentity {
                group: options.group,
                member_id: options.member_id,
                cluster_id: options.cluster_id,
                message_bytes_max,
            },
            removed.clone(),
            options.dialer.clone(),
            options.disk_io,
            options.observer.clone(),
        );
        let raft =
            Raft::new(options.member_id, Arc::new(config), network.clone(), log, state_machine.clone())
                .await
                .map_err(|e| failed("start consensus", &e))?;
        if let Bootstrap::New(members) = &options.bootstrap {
            let initialized = raft.is_initialized().await.map_err(|e| failed("read consensus state", &e))?;
            if !initialized {
                if holds_restored_data(&options.state).map_err(|e| failed("read the state", &e))? {
                    options
                        .log
                        .put_meta(UNSEALED_RESTORE_KEY, &[])
                        .map_err(|e| failed("write the log", &e))?;
                }
                match raft.initialize(members.clone()).await {
                    Ok(()) => {}
                    // Another member already initialized the shared configuration.
                    Err(RaftError::APIError(openraft::errors::InitializeError::NotAllowed(_))) => {}
                    Err(e) => return Err(failed("initialize the cluster", &e)),
                }
            }
        }
        let (failure, _) = watch::channel(None);
        let inner = Arc::new(Inner {
            raft,
            observer: options.observer.clone(),
            group: options.group,
            member_id: options.member_id,
            cluster_id: options.cluster_id,
            network,
            snapshot_bytes_max: options.snapshot_bytes_max,
            state: options.state.clone(),
            state_machine,
            removed,
            pending: Arc::new(Semaphore::new((limits::PROPOSALS_PENDING_BYTES_MAX / 1024) as usize)),
            failure,
            election_timeout: Duration::from_millis(election),
            leader_lease: Duration::from_millis(leader_lease_ms),
            leader_contact: Mutex::new(None),
            failover: crate::failover::Failover::default(),
            stop_checkpointer: Mutex::new(None),
            disk_io: options.disk_io,
            leader_service: std::sync::OnceLock::new(),
            forwards: Mutex::new(BTreeMap::new()),
            forward_links: Mutex::new(BTreeMap::new()),
            reads: Batcher::new(1, usize::MAX),
            counters: Combiner::default(),
            restore_sealed: watch::Sender::new(true),
        });
        let consensus = Consensus { inner };
        consensus.start_checkpointer();
        consensus.start_watchdog();
        if let Some(interval) = options.probe_interval {
            consensus.start_prober(interval);
        }
        consensus.stop_when_removed();
        consensus.publish_attributes(options.name, options.client_urls);
        if options.log.meta(UNSEALED_RESTORE_KEY).map_err(|e| failed("read the log", &e))?.is_some() {
            consensus.inner.restore_sealed.send_replace(false);
            consensus.seal_restored_state(options.log.clone());
        }
        Ok(consensus)
    }

    /// Cuts the log behind a snapshot of a restored state, once the member has applied an
    /// entry: a member added later is then sent that snapshot, with the restored data,
    /// instead of a log that begins before it (and would leave it empty). etcd's restore
    /// does the same by starting the log with a snapshot record. The log's mark is removed
    /// once the log is cut, so a member that stops halfway does it again when restarted.
    fn seal_restored_state(&self, log: Arc<LogStore>) {
        let consensus = self.clone();
        tokio::spawn(async move {
            let raft = &consensus.inner.raft;
            let mut metrics = raft.metrics();
            let (mut snapshot_asked, mut purge_asked) = (false, None);
            loop {
                let (applied, snapshot, purged) = {
                    let m = metrics.borrow_watched();
                    (m.last_applied, m.snapshot, m.purged)
                };
                if let Some(snapshot) = snapshot {
                    if purged.is_some_and(|p| p.index >= snapshot.index) {
                        match log.delete_meta(UNSEALED_RESTORE_KEY) {
                            Ok(()) => {
                                tracing::info!(index = snapshot.index, "restored state sealed in a snapshot");
                                consensus.inner.restore_sealed.send_replace(true);
                            }
                            Err(e) => consensus.fail(format!("write the log: {e}")),
                        }
                        return;
                    }
                    if purge_asked != Some(snapshot.index) {
                        purge_asked = Some(snapshot.index);
                        // The snapshot openraft took at start is the state as replayed, not
                        // yet durable: make it so before the log behind it goes.
                        let state = consensus.inner.state.clone();
                        let checkpoint = move || state.checkpoint().map_err(std::io::Error::other);
                        if let Err(e) = consensus.inner.disk_io.run(checkpoint).await {
                            consensus.fail(format!("checkpoint the restored state: {e}"));
                            return;
                        }
                        if raft.trigger().purge_log(snapshot.index).await.is_err() {
                            return;
                        }
                    }
                } else if applied.is_some() && !snapshot_asked {
                    snapshot_asked = true;
                    if raft.trigger().snapshot().await.is_err() {
                        return;
                    }
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    pub fn member_id(&self) -> u64 {
        self.inner.member_id
    }

    pub fn cluster_id(&self) -> u64 {
        self.inner.cluster_id
    }

    /// The tonic service that serves this member's peer URL.
    pub fn peer_service(
        &self,
    ) -> synod_api::synodpb::raft_server::RaftServer<crate::peer_service::PeerService> {
        let limit = self.inner.network.identity().message_bytes_max;
        synod_api::synodpb::raft_server::RaftServer::new(crate::peer_service::PeerService::new(
            self.inner.clone(),
        ))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit)
    }

    /// Resolves when the group hits a fatal failure; the member must stop.
    pub fn failure(&self) -> watch::Receiver<Option<String>> {
        self.inner.failure.subscribe()
    }

    fn fail(&self, message: String) {
        tracing::error!(error = %message, "consensus failed; the member stops");
        self.inner.failure.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(message);
                true
            } else {
                false
            }
        });
    }

    /// The current raft term (cheap: no copy of the metrics).
    pub fn term(&self) -> u64 {
        self.inner.raft.metrics().borrow_watched().current_term
    }

    /// The leader this member knows of (cheap: no copy of the metrics).
    ///
    /// A leader that has heard from no quorum for an election timeout, or a follower that
    /// has heard nothing from its leader for as long, reports no leader, as etcd's members
    /// do (CheckQuorum, and the follower's election timer): openraft keeps naming the
    /// leader, and clients asking `hasleader` should hear the truth.
    pub fn leader(&self) -> Option<u64> {
        let m = self.inner.raft.metrics();
        let m = m.borrow_watched();
        self.serving_leader(&m)
    }

    fn serving_leader(&self, m: &openraft::RaftMetrics<TypeConfig>) -> Option<u64> {
        let leader = m.current_leader?;
        if leader != self.inner.member_id {
            // openraft keeps naming a leader that went silent (pre-vote rounds do not clear
            // it); etcd's follower forgets it when its election timer fires.
            let contact = *self.inner.leader_contact.lock().unwrap_or_else(|p| p.into_inner());
            let recent = contact
                .is_some_and(|(from, at)| from == leader && at.elapsed() < self.inner.election_timeout);
            return recent.then_some(leader);
        }
        let membership = m.membership_config.membership();
        let alone = membership.voter_ids().all(|id| id == self.inner.member_id);
        let heard = m
            .last_quorum_acked
            .as_ref()
            .is_some_and(|at| openraft::Instant::elapsed(&**at) < self.inner.election_timeout);
        (alone || heard).then_some(leader)
    }

    /// Whether `id` is in the newest membership this member knows, as a voter or a learner.
    pub fn is_member(&self, id: u64) -> bool {
        self.inner.raft.metrics().borrow_watched().membership_config.membership().get_node(&id).is_some()
    }

    /// Whether this member is a learner: in the membership but without a vote.
    pub fn is_learner(&self) -> bool {
        let m = self.inner.raft.metrics();
        let m = m.borrow_watched();
        self.learner_in(&m)
    }

    fn learner_in(&self, m: &openraft::RaftMetrics<TypeConfig>) -> bool {
        let membership = m.membership_config.membership();
        membership.get_node(&self.inner.member_id).is_some()
            && !membership.voter_ids().any(|id| id == self.inner.member_id)
    }

    fn metrics(&self) -> openraft::RaftMetrics<TypeConfig> {
        self.inner.raft.metrics().borrow_watched().clone()
    }

    pub fn status(&self) -> ConsensusStatus {
        let m = self.metrics();
        let applied = m.last_applied.map_or(0, |l| l.index);
        ConsensusStatus {
            term: m.current_term,
            leader: self.serving_leader(&m),
            last_log_index: m.last_log_index.unwrap_or(0),
            commit_index: m.local_committed.map_or(applied, |l| l.index).max(applied),
            applied_index: applied,
            first_log_index: m.purged.map_or(0, |l| l.index + 1),
            snapshots_installed: self.inner.state_machine.snapshots_installed(),
            is_learner: self.learner_in(&m),
        }
    }

    /// The members, from the newest membership this member knows, with the names and client
    /// URLs they published.
    pub fn members(&self) -> Vec<MemberInfo> {
        let m = self.metrics();
        let membership = m.membership_config.membership().clone();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, node)| {
                let published = self
                    .inner
                    .state
                    .meta_value(&member_key(self.inner.group, *id))
                    .ok()
                    .flatten()
                    .and_then(|bytes| pb::MemberAttributes::decode(bytes.as_slice()).ok());
                MemberInfo {
                    id: *id,
                    name: published.as_ref().map_or_else(|| node.name.clone(), |p| p.name.clone()),
                    peer_urls: node.peer_urls.clone(),
                    started: published.is_some(),
                    client_urls: published.map_or_else(|| node.client_urls.clone(), |p| p.client_urls),
                    is_learner: !voters.contains(id),
                }
            })
            .collect()
    }

    /// Replicates `command` and returns its applied outcome. Fails with
    /// [`ConsensusError::TooManyRequests`] at once when too many bytes of proposals wait.
    ///
    /// Cancel safety: dropping the future does not withdraw the proposal; it may still be
    /// applied, as in etcd.
    pub async fn propose(&self, command: Command) -> Result<Applied, ConsensusError> {
        let _budget = self.budget(command.encoded_len())?;
        let deadline = Instant::now() + Duration::from_millis(limits::REQUEST_TIMEOUT_MS);
        match tokio::time::timeout_at(deadline, self.propose_until(command, deadline)).await {
            Ok(outcome) => {
                outcome?.ok_or_else(|| ConsensusError::Failed("the command produced no outcome".into()))
            }
            Err(_) => Err(ConsensusError::Timeout),
        }
    }

    fn budget(&self, bytes: usize) -> Result<OwnedSemaphorePermit, ConsensusError> {
        self.inner
            .pending
            .clone()
            .try_acquire_many_owned(budget_permits(bytes))
            .map_err(|_| ConsensusError::TooManyRequests)
    }

    async fn propose_until(
        &self,
        command: Command,
        deadline: Instant,
    ) -> Result<Option<Applied>, ConsensusError> {
        loop {
            // A follower that knows its leader hands the write on at once, without first
            // hearing from openraft that it does not lead.
            if let Some((leader, node, term)) = self.known_leader_elsewhere() {
                match self.forward(leader, &node, command.clone(), deadline).await {
                    Err(ConsensusError::NotLeader) => {
                        self.wait_for_new_leader(leader, term).await?;
                        continue;
                    }
                    outcome => return outcome,
                }
            }
            match self.client_write(command.clone()).await {
                Ok((_, applied)) => return Ok(applied),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                    match self.forward_target(&forward) {
                        // The leader we knew stepped down before taking the command: nothing
                        // was proposed, so wait for its successor and try again.
                        Some((leader, node)) => {
                            let term = self.term();
                            match self.forward(leader, &node, command.clone(), deadline).await {
                                Err(ConsensusError::NotLeader) => {
                                    self.wait_for_new_leader(leader, term).await?
                                }
                                outcome => return outcome,
                            }
                        }
                        None => self.wait_for_leader().await?,
                    }
                }
                Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => {
                    return Err(ConsensusError::LeaderChanged);
                }
                Err(RaftError::APIError(e)) => return Err(ConsensusError::Failed(e.to_string())),
                Err(RaftError::Fatal(e)) => return Err(self.fatal(&e)),
            }
        }
    }

    fn fatal(&self, error: &openraft::errors::Fatal<TypeConfig>) -> ConsensusError {
        match error {
            openraft::errors::Fatal::Stopped => ConsensusError::Stopped,
            other => {
                self.fail(format!("consensus: {other}"));
                ConsensusError::Stopped
            }
        }
    }

    /// The leader openraft names, when it is another member this one knows how to reach,
    /// with the term it leads in.
    fn known_leader_elsewhere(&self) -> Option<(u64, MemberNode, u64)> {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow_watched();
        let leader = m.current_leader.filter(|&l| l != self.inner.member_id)?;
        let node = m.membership_config.membership().get_node(&leader)?.clone();
        Some((leader, node, m.current_term))
    }

    /// The leader to forward to, if one is known and it is not this member.
    fn forward_target(&self, forward: &ForwardToLeader<TypeConfig>) -> Option<(u64, MemberNode)> {
        match (forward.leader_id, &forward.leader_node) {
            (Some(id), Some(node)) if id != self.inner.member_id => Some((id, node.clone())),
            _ => None,
        }
    }

    /// Waits (about an election's time) for a leader that can serve: another member this
    /// one knows how to reach, or this one while a quorum acknowledges it. `NoLeader` if none
    /// appears.
    ///
    /// openraft refuses proposals on a leader whose quorum has not answered within the
    /// leader lease, naming no leader to forward to; waiting here rather than retrying at
    /// once keeps such a leader from spinning until the request deadline. So does a member
    /// that has just joined: it hears from the leader before it has the membership that
    /// says where the leader is (synod-sim found it spinning there).
    async fn wait_for_leader(&self) -> Result<(), ConsensusError> {
        let me = self.inner.member_id;
        let lease = self.inner.leader_lease;
        let waited = self
            .inner
            .raft
            .wait(Some(self.inner.election_timeout))
            .metrics(
                |m| match m.current_leader {
                    Some(leader) if leader == me => m
                        .last_quorum_acked
                        .as_ref()
                        .is_some_and(|at| openraft::Instant::elapsed(&**at) < lease),
                    Some(leader) => m.membership_config.membership().get_node(&leader).is_some(),
                    None => false,
                },
                "a leader that can serve",
            )
            .await;
        match waited {
            Ok(_) => Ok(()),
            Err(_) => Err(ConsensusError::NoLeader),
        }
    }

    /// Waits (about an election's time) until this member follows a new leader: another
    /// member than `former`, which led in `term`, or `former` again in a later term (a leader
    /// that stepped down is often elected again). `NoLeader` if none appears.
    async fn wait_for_new_leader(&self, former: u64, term: u64) -> Result<(), ConsensusError> {
        let waited = self
            .inner
            .raft
            .wait(Some(self.inner.election_timeout))
            .metrics(
                |m| m.current_leader.is_some_and(|l| l != former || m.current_term > term),
                "a new leader",
            )
            .await;
        waited.map(drop).map_err(|_| ConsensusError::NoLeader)
    }

    /// Hands `command` to the leader and waits until this member has applied it too. Writes
    /// forwarded at the same time share peer calls.
    async fn forward(
        &self,
        leader: u64,
        node: &MemberNode,
        command: Command,
        deadline: Instant,
    ) -> Result<Option<Applied>, ConsensusError> {
        let forward = Forward { leader, node: node.clone(), command, deadline };
        let run: RunBatch<Forward, Forwarded> =
            |consensus, batch| Box::pin(async move { consensus.forward_batch(batch).await });
        let batcher = {
            let mut forwards = self.inner.forwards.lock().unwrap_or_else(|p| p.into_inner());
            let batcher = forwards
                .entry(leader)
                .or_insert_with(|| Arc::new(ForwardBatcher::new(FORWARD_CALLS_MAX, FORWARD_BATCH_MAX)));
            Arc::clone(batcher)
        };
        let Some(forwarded) = batcher.submit(self, forward, run).await else {
            return Err(ConsensusError::Stopped);
        };
        forwarded.await.unwrap_or(Err(ConsensusError::Stopped))
    }

    /// Forwards a batch of writes, one peer call per leader they name (almost always one),
    /// and returns their outcomes to come: a task of their own waits until this member has
    /// applied the last of them, so that the next batch need not.
    async fn forward_batch(&self, batch: Vec<Forward>) -> Vec<Forwarded> {
        let mut outcomes: Vec<Option<Result<Option<Applied>, ConsensusError>>> = vec![None; batch.len()];
        let mut leaders: Vec<u64> = batch.iter().map(|f| f.leader).collect();
        leaders.sort_unstable();
        leaders.dedup();
        let calls = leaders.into_iter().map(|leader| {
            let positions: Vec<usize> = (0..batch.len()).filter(|&i| batch[i].leader == leader).collect();
            let node = batch[positions[0]].node.clone();
            let deadline = positions.iter().map(|&i| batch[i].deadline).max().expect("a leader of the batch");
            let commands = positions.iter().map(|&i| batch[i].command.clone()).collect();
            async move { (positions, self.forward_call(leader, &node, commands, deadline).await) }
        });
        let mut applied_index = 0;
        let mut wait_deadline = Instant::now();
        for (positions, answered) in futures::future::join_all(calls).await {
            match answered {
                Ok(answers) => {
                    for (position, answer) in positions.into_iter().zip(answers) {
                        if let Ok((index, _)) = &answer {
                            applied_index = applied_index.max(*index);
                            wait_deadline = wait_deadline.max(batch[position].deadline);
                        }
                        outcomes[position] = Some(answer.map(|(_, applied)| applied));
                    }
                }
                Err(error) => {
                    for position in positions {
                        outcomes[position] = Some(Err(error.clone()));
                    }
                }
            }
        }
        let (senders, receivers): (Vec<_>, Vec<_>) = outcomes.iter().map(|_| oneshot::channel()).unzip();
        let consensus = self.clone();
        tokio::spawn(async move {
            if applied_index > 0
                && let Err(error) = consensus.wait_applied(applied_index, wait_deadline).await
            {
                for outcome in outcomes.iter_mut().filter(|o| matches!(o, Some(Ok(_)))) {
                    *outcome = Some(Err(error.clone()));
                }
            }
            for (sender, outcome) in senders.into_iter().zip(outcomes) {
                let outcome = outcome.unwrap_or_else(|| {
                    Err(ConsensusError::Failed("the leader did not answer a write".into()))
                });
                let _ = sender.send(outcome);
            }
        });
        receivers
    }

    /// One forwarding call: the leader's outcome of each command, with its log index.
    async fn forward_call(
        &self,
        leader: u64,
        node: &MemberNode,
        commands: Vec<Command>,
        deadline: Instant,
    ) -> Result<Vec<Result<(u64, Option<Applied>), ConsensusError>>, ConsensusError> {
        let sent = commands.len();
        let mut client =
            self.inner.network.client(leader, &node.peer_urls).map_err(ConsensusError::Failed)?;
        let remaining = || deadline.saturating_duration_since(Instant::now());
        let message = pb::ForwardRequest { group_id: self.inner.group.0, commands, batch: 0 };
        let link = match self.inner.network.streams_to(leader) {
            true => self.forward_link(&mut client, leader, remaining()).await?,
            false => None,
        };
        let response = match link {
            Some(link) => link.call(message, remaining()).await.map_err(|status| forward_failure(&status))?,
            None => client
                .forward(self.inner.network.request(leader, message, remaining()))
                .await
                .map_err(|status| forward_failure(&status))?
                .into_inner(),
        };
        if response.outcomes.len() != sent {
            return Err(ConsensusError::Failed(format!(
                "the leader answered {} of {sent} forwarded writes",
                response.outcomes.len()
            )));
        }
        Ok(response
            .outcomes
            .into_iter()
            .map(|outcome| {
                if !outcome.error.is_empty() {
                    return Err(etcd_error_from_text(&outcome.error));
                }
                Ok((outcome.index, result_to_applied(outcome.result.unwrap_or_default())?))
            })
            .collect())
    }

    /// The open forwarding stream to `leader`, opened if there is none; `None` when the
    /// leader takes no streams (an earlier synod). Idle streams to other leaders are
    /// closed: a follower forwards to one leader at a time.
    async fn forward_link(
        &self,
        client: &mut RaftClient<PeerChannel>,
        leader: u64,
        within: Duration,
    ) -> Result<Option<Arc<ForwardLink>>, ConsensusError> {
        if let Some(link) = self
            .inner
            .forward_links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&leader)
            .filter(|link| link.is_open())
        {
            return Ok(Some(link.clone()));
        }
        let link = match ForwardLink::open(client, &self.inner.network, leader, within).await {
            Ok(link) => link,
            Err(status) if self.inner.network.note_stream_refusal(leader, &status) => return Ok(None),
            Err(status) => return Err(forward_failure(&status)),
        };
        let mut links = self.inner.forward_links.lock().unwrap_or_else(|p| p.into_inner());
        links.retain(|id, link| *id == leader || !link.is_idle());
        // Two forwards may have opened one each; both work, the later one is kept.
        links.insert(leader, Arc::new(link));
        Ok(Some(links[&leader].clone()))
    }

    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), ConsensusError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.inner
            .raft
            .wait(Some(remaining))
            .applied_index_at_least(Some(index), "applied")
            .await
            .map(drop)
            .map_err(|_| ConsensusError::Timeout)
    }

    /// Writes `command` through openraft on this member, folding a counter add into an
    /// entry with the other adds to its key that wait (see [`combine`]).
    async fn client_write(&self, command: Command) -> WriteOutcome {
        if let Some((key, op)) = combine::single_add(&command) {
            return self.inner.counters.write(self, key, op.clone()).await;
        }
        let response = self.inner.raft.client_write(Proposal(command)).await?;
        Ok((response.log_id.index, response.data.0))
    }

    /// Proposes on this member, which must be the leader (the peer service's Forward).
    pub(crate) async fn propose_on_leader(
        &self,
        command: Command,
    ) -> Result<(u64, Option<Applied>), ConsensusError> {
        let _budget = self.budget(command.encoded_len())?;
        match self.client_write(command).await {
            Ok(outcome) => Ok(outcome),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Err(ConsensusError::NotLeader),
            Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => {
                Err(ConsensusError::LeaderChanged)
            }
            Err(RaftError::APIError(e)) => Err(ConsensusError::Failed(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(self.fatal(&e)),
        }
    }

    /// Sets what answers leader calls on this member; once.
    pub fn set_leader_service(&self, service: Arc<dyn LeaderService>) {
        if self.inner.leader_service.set(service).is_err() {
            tracing::warn!("a second leader service was ignored");
        }
    }

    /// Has the leader answer `call`: this member's own service if it leads, else the
    /// leader's over the peer transport, following a change of leader until the request
    /// deadline.
    pub async fn call_leader(&self, call: LeaderCall) -> Result<LeaderReply, ConsensusError> {
        let deadline = Instant::now() + Duration::from_millis(limits::REQUEST_TIMEOUT_MS);
        match tokio::time::timeout_at(deadline, self.call_leader_until(call, deadline)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(ConsensusError::Timeout),
        }
    }

    async fn call_leader_until(
        &self,
        call: LeaderCall,
        deadline: Instant,
    ) -> Result<LeaderReply, ConsensusError> {
        loop {
            let term = self.term();
            let Some(leader) = self.leader() else {
                self.wait_for_leader().await?;
                continue;
            };
            let outcome = if leader == self.inner.member_id {
                self.call_here(call).await
            } else {
                self.call_member(leader, call, deadline).await
            };
            match outcome {
                Err(ConsensusError::NotLeader) => self.wait_for_new_leader(leader, term).await?,
                outcome => return outcome,
            }
        }
    }

    /// Answers a leader call on this member (the peer service's LeaderCall).
    pub(crate) async fn call_here(&self, call: LeaderCall) -> Result<LeaderReply, ConsensusError> {
        match self.inner.leader_service.get() {
            Some(service) => service.call(call).await,
            // Still starting: the caller looks for the leader again.
            None => Err(ConsensusError::NotLeader),
        }
    }

    /// Proposes `command` only if this member leads, never handing it to another member:
    /// what the leader decides alone (lease expiry and checkpoints) must not be applied
    /// under a later leader that did not decide it. `NotLeader` otherwise.
    pub async fn propose_here(&self, command: Command) -> Result<Applied, ConsensusError> {
        let deadline = Instant::now() + Duration::from_millis(limits::REQUEST_TIMEOUT_MS);
        match tokio::time::timeout_at(deadline, self.propose_on_leader(command)).await {
            Ok(outcome) => {
                outcome?.1.ok_or_else(|| ConsensusError::Failed("the command produced no outcome".into()))
            }
            Err(_) => Err(ConsensusError::Timeout),
        }
    }

    /// Confirms by a round of heartbeats that this member leads, then waits until it has
    /// applied everything committed before: `NotLeader` if it does not lead. Never
    /// forwarded, unlike [`Consensus::read_barrier`].
    pub async fn leader_barrier(&self) -> Result<(), ConsensusError> {
        let deadline = Instant::now() + Duration::from_millis(limits::REQUEST_TIMEOUT_MS);
        let read = match tokio::time::timeout_at(deadline, self.read_index_on_leader()).await {
            Ok(read) => read?,
            Err(_) => return Err(ConsensusError::Timeout),
        };
        match read {
            Some(log_id) => self.wait_applied(log_id.index, deadline).await,
            None => Ok(()),
        }
    }

    async fn call_member(
        &self,
        leader: u64,
        call: LeaderCall,
        deadline: Instant,
    ) -> Result<LeaderReply, ConsensusError> {
        let node = self
            .metrics()
            .membership_config
            .membership()
            .get_node(&leader)
            .cloned()
            .ok_or(ConsensusError::NoLeader)?;
        let mut client =
            self.inner.network.client(leader, &node.peer_urls).map_err(ConsensusError::Failed)?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let message = pb::LeaderCallRequest { group_id: self.inner.group.0, call: Some(call) };
        let response = client
            .leader_call(self.inner.network.request(leader, message, remaining))
            .await
            .map_err(|status| forward_failure(&status))?
            .into_inner();
        if !response.error.is_empty() {
            return Err(etcd_error_from_text(&response.error));
        }
        response.reply.ok_or_else(|| ConsensusError::Failed("the leader's answer is empty".into()))
    }

    /// Waits until a read of the local state is linearizable. Reads that wait at the same
    /// time share one read index, obtained after all of them arrived.
    pub async fn read_barrier(&self) -> Result<(), ConsensusError> {
        let run: RunBatch<(), Result<(), ConsensusError>> = |consensus, batch| {
            Box::pin(async move {
                let deadline = Instant::now() + Duration::from_millis(limits::REQUEST_TIMEOUT_MS);
                let outcome =
                    match tokio::time::timeout_at(deadline, consensus.read_barrier_until(deadline)).await {
                        Ok(outcome) => outcome,
                        Err(_) => Err(ConsensusError::Timeout),
                    };
                vec![outcome; batch.len()]
            })
        };
        let deadline = Instant::now() + Duration::from_millis(limits::REQUEST_TIMEOUT_MS);
        match tokio::time::timeout_at(deadline, self.inner.reads.submit(self, (), run)).await {
            Ok(outcome) => outcome.unwrap_or(Err(ConsensusError::Stopped)),
            Err(_) => Err(ConsensusError::Timeout),
        }
    }

    async fn read_barrier_until(&self, deadline: Instant) -> Result<(), ConsensusError> {
        loop {
            match self.inner.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(forward))) => {
                    match self.forward_target(&forward) {
                        Some((leader, node)) => {
                            let term = self.term();
                            match self.remote_read_index(leader, &node, deadline).await {
                                Err(ConsensusError::NotLeader) => {
                                    self.wait_for_new_leader(leader, term).await?
                                }
                                outcome => return outcome,
                            }
                        }
                        None => self.wait_for_leader().await?,
                    }
                }
                Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(_))) => {
                    return Err(ConsensusError::NoLeader);
                }
                Err(RaftError::Fatal(e)) => return Err(self.fatal(&e)),
            }
        }
    }

    /// A follower's read index: ask the leader for its read index, then wait for local apply.
    async fn remote_read_index(
        &self,
        leader: u64,
        node: &MemberNode,
        deadline: Instant,
    ) -> Result<(), ConsensusError> {
        let mut client =
            self.inner.network.client(leader, &node.peer_urls).map_err(ConsensusError::Failed)?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let message = pb::ReadIndexRequest { group_id: self.inner.group.0 };
        let response = client
            .read_index(self.inner.network.request(leader, message, remaining))
            .await
            .map_err(|_| ConsensusError::NoLeader)?
            .into_inner();
        if !response.error.is_empty() {
            return Err(etcd_error_from_text(&response.error));
        }
        let read = codec::opt_log_id_from(response.read_log_id.as_ref())
            .map_err(|e| ConsensusError::Failed(e.to_string()))?;
        match read {
            Some(read) => self.wait_applied(read.index, deadline).await,
            None => Ok(()),
        }
    }

    /// The leader's read index for a follower (the peer service's ReadIndex).
    pub(crate) async fn read_index_on_leader(&self) -> Result<Option<crate::types::LogId>, ConsensusError> {
        match self.inner.raft.get_read_log_id(ReadPolicy::ReadIndex).await {
            Ok((read, _applied)) => Ok(Some(*read.log_id())),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(_))) => {
                Err(ConsensusError::NotLeader)
            }
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(_))) => {
                Err(ConsensusError::NoLeader)
            }
            Err(RaftError::Fatal(e)) => Err(self.fatal(&e)),
        }
    }

    /// Changes the membership; on a follower the change is handed to the leader. Returns
    /// the member added (for an add) and the members after the change.
    pub async fn change_membership(
        &self,
        change: MemberChange,
    ) -> Result<(Option<u64>, Vec<MemberInfo>), ConsensusError> {
        let deadline = Instant::now() + Duration::from_millis(limits::REQUEST_TIMEOUT_MS);
        let outcome = tokio::time::timeout_at(deadline, async {
            loop {
                let m = self.metrics();
                match m.current_leader {
                    Some(leader) if leader == self.inner.member_id => {
                        return self.change_on_leader(change.clone(), deadline).await;
                    }
                    Some(leader) => {
                        let node = m.membership_config.membership().get_node(&leader).cloned();
                        let Some(node) = node else { return Err(ConsensusError::NoLeader) };
                        return self.remote_change(leader, &node, change.clone(), deadline).await;
                    }
                    None => self.wait_for_leader().await?,
                }
            }
        })
        .await
        .map_err(|_| ConsensusError::Timeout)??;
        // Answer with this member's view once it has the change.
        if let Some(index) = outcome.1 {
            let _ = self.wait_applied(index, deadline).await;
        }
        Ok((outcome.0, self.members()))
    }

    async fn remote_change(
        &self,
        leader: u64,
        node: &MemberNode,
        change: MemberChange,
        deadline: Instant,
    ) -> Result<(Option<u64>, Option<u64>), ConsensusError> {
        use pb::member_change_request::Change;
        let mut client =
            self.inner.network.client(leader, &node.peer_urls).map_err(ConsensusError::Failed)?;
        let change = match change {
            MemberChange::Add { peer_urls, is_learner } => {
                Change::Add(pb::MemberAdd { peer_urls, is_learner })
            }
            MemberChange::Remove(id) => Change::Remove(id),
            MemberChange::Promote(id) => Change::Promote(id),
            MemberChange::Update { id, peer_urls } => Change::Update(pb::MemberUpdate { id, peer_urls }),
        };
        let message = pb::MemberChangeRequest { group_id: self.inner.group.0, change: Some(change) };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let response = client
            .member_change(self.inner.network.request(leader, message, remaining))
            .await
            .map_err(|status| forward_failure(&status))?
            .into_inner();
        if !response.error.is_empty() {
            return Err(etcd_error_from_text(&response.error));
        }
        let added = (response.member_id != 0).then_some(response.member_id);
        Ok((added, Some(response.index)))
    }

    /// Runs a membership change on this member, the leader, after etcd's checks (its
    /// default `--strict-reconfig-check`). Returns the member added and the log index the
    /// change committed at. A change that finds another one in progress waits for it.
    pub(crate) async fn change_on_leader(
        &self,
        change: MemberChange,
        deadline: Instant,
    ) -> Result<(Option<u64>, Option<u64>), ConsensusError> {
        let attempts = async {
            // A member added now must be sent the restored data, not a log without it.
            let _ = self.inner.restore_sealed.subscribe().wait_for(|sealed| *sealed).await;
            loop {
                match self.try_change_on_leader(change.clone()).await {
                    Err(Attempt::Busy) => self.wait_membership_settled().await,
                    Err(Attempt::Failed(error)) => return Err(error),
                    Ok(outcome) => return Ok(outcome),
                }
            }
        };
        tokio::time::timeout_at(deadline, attempts).await.map_err(|_| ConsensusError::Timeout)?
    }

    async fn wait_membership_settled(&self) {
        let _ = self
            .inner
            .raft
            .wait(Some(self.inner.election_timeout))
            .metrics(
                |m| {
                    m.membership_config.log_id() == m.committed_membership_config.log_id()
                        && m.membership_config.membership().get_joint_config().len() == 1
                },
                "membership settled",
            )
            .await;
    }

    /// Whether `id` has published its attributes, etcd's "started" member.
    fn started(&self, id: u64) -> bool {
        id == self.inner.member_id
            || self.inner.state.meta_value(&member_key(self.inner.group, id)).ok().flatten().is_some()
    }

    async fn try_change_on_leader(
        &self,
        change: MemberChange,
    ) -> Result<(Option<u64>, Option<u64>), Attempt> {
        let m = self.metrics();
        let membership = m.membership_config.membership().clone();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let exists = |id: u64| membership.get_node(&id).is_some();
        // etcd's HealthInterval: a member the leader heard from this recently is connected.
        let connected = |id: u64| {
            id == self.inner.member_id
                || m.heartbeat
                    .as_ref()
                    .and_then(|h| h.get(&id).cloned().flatten())
                    .is_some_and(|at| openraft::Instant::elapsed(&*at) < CONNECTED_WITHIN)
        };
        let quorum = |n: usize| n / 2 + 1;
        let started_voters = |excluding: Option<u64>| {
            voters.iter().filter(|id| Some(**id) != excluding && self.started(**id)).count()
        };
        let write = |result: Result<
            openraft::raft::ClientWriteResponse<TypeConfig>,
            RaftError<TypeConfig, ClientWriteError<TypeConfig>>,
        >| {
            match result {
                Ok(response) => Ok(response.log_id.index),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                    Err(ConsensusError::NotLeader.into())
                }
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                ))) => Err(Attempt::Busy),
                Err(RaftError::APIError(e)) => Err(ConsensusError::Failed(e.to_string()).into()),
                Err(RaftError::Fatal(e)) => Err(self.fatal(&e).into()),
            }
        };
        match change {
            MemberChange::Add { peer_urls, is_learner } => {
                if peer_urls.is_empty() {
                    return Err(EtcdError::MemberBadUrls.into());
                }
                let taken =
                    membership.nodes().any(|(_, n)| n.peer_urls.iter().any(|u| peer_urls.contains(u)));
                if taken {
                    return Err(EtcdError::PeerUrlExist.into());
                }
                if is_learner {
                    let learners = membership.nodes().filter(|(id, _)| !voters.contains(id)).count();
                    if learners >= LEARNERS_MAX {
                        return Err(EtcdError::TooManyLearners.into());
                    }
                } else {
                    // A new voter raises the quorum: the started members must still reach it.
                    let members = voters.len() + 1;
                    let started = started_voters(None);
                    if !(started == 1 && members == 2) && started < quorum(members) {
                        return Err(EtcdError::MemberNotEnoughStarted.into());
                    }
                    if !voters.iter().all(|id| connected(*id)) {
                        return Err(EtcdError::Unhealthy.into());
                    }
                }
                let id = added_member_id(&peer_urls, self.inner.cluster_id);
                let node = MemberNode { name: String::new(), peer_urls, client_urls: Vec::new() };
                let mut index = write(self.inner.raft.add_learner(id, node, false).await)?;
                if !is_learner {
                    // The learner is in: from here a busy membership is waited out, never
                    // retried from the start (which would find the URLs taken).
                    index = loop {
                        let promoted =
                            self.inner.raft.change_membership(ChangeMembers::AddVoterIds([id].into()), false);
                        match write(promoted.await) {
                            Err(Attempt::Busy) => self.wait_membership_settled().await,
                            outcome => break outcome?,
                        }
                    };
                }
                Ok((Some(id), Some(index)))
            }
            MemberChange::Remove(id) => {
                if !exists(id) {
                    return Err(EtcdError::MemberNotFound.into());
                }
                let index = if voters.contains(&id) {
                    let remaining = voters.len() - 1;
                    if started_voters(Some(id)) < quorum(remaining) {
                        return Err(EtcdError::MemberNotEnoughStarted.into());
                    }
                    // Removing a member that is down costs no active quorum; otherwise the
                    // members left connected must still form one.
                    let active = voters.iter().filter(|v| connected(**v)).count();
                    if (id == self.inner.member_id || connected(id)) && active - 1 < quorum(remaining) {
                        return Err(EtcdError::Unhealthy.into());
                    }
                    write(
                        self.inner
                            .raft
                            .change_membership(ChangeMembers::RemoveVoters([id].into()), false)
                            .await,
                    )?
                } else {
                    write(
                        self.inner
                            .raft
                            .change_membership(ChangeMembers::RemoveNodes([id].into()), false)
                            .await,
                    )?
                };
                Ok((None, Some(index)))
            }
            MemberChange::Promote(id) => {
                if !exists(id) {
                    return Err(EtcdError::MemberNotFound.into());
                }
                if voters.contains(&id) {
                    return Err(EtcdError::MemberNotLearner.into());
                }
                // etcd promotes a learner only once it has most of the leader's log.
                let matched =
                    m.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten()).map_or(0, |l| l.index);
                let last = m.last_log_index.unwrap_or(0);
                if (matched as f64) < (last as f64) * LEARNER_READY_FRACTION {
                    return Err(EtcdError::LearnerNotReady.into());
                }
                // The learner counts as started for the quorum it joins.
                if started_voters(None) + 1 < quorum(voters.len() + 1) {
                    return Err(EtcdError::MemberNotEnoughStarted.into());
                }
                let index = write(
                    self.inner.raft.change_membership(ChangeMembers::AddVoterIds([id].into()), false).await,
                )?;
                Ok((None, Some(index)))
            }
            MemberChange::Update { id, peer_urls } => {
                let Some(node) = membership.get_node(&id).cloned() else {
                    return Err(EtcdError::MemberNotFound.into());
                };
                let taken = membership
                    .nodes()
                    .any(|(other, n)| *other != id && n.peer_urls.iter().any(|u| peer_urls.contains(u)));
                if taken {
                    return Err(EtcdError::PeerUrlExist.into());
                }
                let updated = MemberNode { peer_urls, ..node };
                let index = write(
                    self.inner
                        .raft
                        .change_membership(ChangeMembers::SetNodes(BTreeMap::from([(id, updated)])), false)
                        .await,
                )?;
                Ok((None, Some(index)))
            }
        }
    }

    /// Moves leadership to `target`; this member must be the leader. Waits until the target
    /// leads.
    pub async fn transfer_leadership(&self, target: u64) -> Result<(), ConsensusError> {
        let m = self.metrics();
        if m.current_leader != Some(self.inner.member_id) {
            return Err(ConsensusError::NotLeader);
        }
        if target == self.inner.member_id {
            return Ok(());
        }
        if !m.membership_config.membership().voter_ids().any(|id| id == target) {
            return Err(EtcdError::BadLeaderTransferee.into());
        }
        self.inner.raft.trigger().transfer_leader(target).await.map_err(|e| self.fatal(&e))?;
        self.inner
            .raft
            .wait(Some(Duration::from_millis(limits::REQUEST_TIMEOUT_MS)))
            .current_leader(target, "leadership transfer")
            .await
            .map(drop)
            .map_err(|_| ConsensusError::Timeout)
    }

    /// Before a leader stops (etcd's `TransferLeadershipOnShutdown`): hands the leadership
    /// to the voter whose log is the most up to date, so the others need not wait an
    /// election timeout to notice the leader is gone. Returns the new leader; `None` when
    /// this member does not lead, leads alone, or the handover did not finish in time.
    pub async fn hand_over_leadership(&self) -> Option<u64> {
        let m = self.metrics();
        if m.current_leader != Some(self.inner.member_id) {
            return None;
        }
        let matched = |id: &u64| {
            m.replication.as_ref().and_then(|r| r.get(id).cloned().flatten()).map_or(0, |l| l.index)
        };
        let target = m
            .membership_config
            .membership()
            .voter_ids()
            .filter(|id| *id != self.inner.member_id)
            .max_by_key(|id| (matched(id), std::cmp::Reverse(*id)))?;
        match self.transfer_leadership(target).await {
            Ok(()) => Some(target),
            Err(e) => {
                tracing::warn!(error = %e, target = %format!("{target:x}"), "leadership not handed over before stopping");
                None
            }
        }
    }

    /// Makes the applied state durable now.
    pub fn checkpoint(&self) -> Result<LogIndex, ConsensusError> {
        self.inner.state.checkpoint().map_err(|e| ConsensusError::Failed(e.to_string()))
    }

    /// The cluster id and membership, for a member that joins (the peer service's
    /// ClusterInfo).
    pub(crate) fn cluster_info(&self) -> pb::ClusterInfoResponse {
        let m = self.metrics();
        pb::ClusterInfoResponse {
            cluster_id: self.inner.cluster_id,
            membership: Some(codec::membership(m.membership_config.membership())),
            started: self
                .members()
                .into_iter()
                .filter(|member| member.started)
                .map(|member| member.id)
                .collect(),
        }
    }

    /// Announces this member's name and client URLs through the log once there is a leader,
    /// as etcd members publish their attributes; retried until it lands.
    fn publish_attributes(&self, name: String, client_urls: Vec<String>) {
        let consensus = self.clone();
        tokio::spawn(async move {
            let attributes = pb::MemberAttributes { member_id: consensus.inner.member_id, name, client_urls };
            loop {
                let key = member_key(consensus.inner.group, consensus.inner.member_id);
                let published = consensus.inner.state.meta_value(&key).ok().flatten();
                if published.as_deref() == Some(attributes.encode_to_vec().as_slice()) {
                    return;
                }
                let command = Command {
                    op: Some(command::Op::MemberAttributes(attributes.clone())),
                    ..Default::default()
                };
                let deadline = Instant::now() + Duration::from_millis(limits::REQUEST_TIMEOUT_MS);
                match consensus.propose_until(command, deadline).await {
                    Ok(_) | Err(ConsensusError::Stopped) => return,
                    Err(_) => {
                        // Try again as soon as there is a leader, without spinning.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        let _ = consensus.wait_for_leader().await;
                    }
                }
            }
        });
    }

    /// Stops the member once it learns it was removed from the cluster, as etcd does.
    fn stop_when_removed(&self) {
        let consensus = self.clone();
        let mut removed = self.inner.removed.watch();
        tokio::spawn(async move {
            if removed.wait_for(|removed| *removed).await.is_ok() {
                consensus.fail(REMOVED_MESSAGE.to_string());
            }
        });
    }

    /// Stops the group if openraft reports a fatal error, and logs leader changes.
    fn start_watchdog(&self) {
        let consensus = self.clone();
        let mut metrics = self.inner.raft.metrics();
        tokio::spawn(async move {
            let mut known = (0, None);
            let mut followed = None;
            loop {
                let (running, term, leader) = {
                    let m = metrics.borrow_watched();
                    (m.running_state.clone(), m.current_term, m.current_leader)
                };
                // etcd counts a change whenever raft names a leader other than the last one
                // it named, which includes the same member after a time without a leader.
                if leader.is_some() && leader != followed {
                    consensus.inner.observer.leader_changed(leader.unwrap_or_default());
                }
                followed = leader;
                if (term, leader) != known {
                    match leader {
                        Some(leader) => {
                            tracing::info!(term, leader = %format!("{leader:x}"), "leader elected")
                        }
                        None if known.1.is_some() => tracing::info!(term, "leader lost"),
                        None => {}
                    }
                    known = (term, leader);
                }
                if let Err(fatal) = running {
                    if !matches!(fatal, openraft::errors::Fatal::Stopped) {
                        consensus.fail(format!("consensus: {fatal}"));
                    }
                    return;
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// Checkpoints the applied state every `STATE_CHECKPOINT_INTERVAL_MS` when it changed,
    /// and carries a compaction on, a step every `RECLAIM_PAUSE_MS` while it has work left:
    /// `COMPACTION_PASS_KEYS` more keys of its pass over the index, then `RECLAIM_BATCH`
    /// of the records it dropped.
    fn start_checkpointer(&self) {
        let (stop, mut stopped) = watch::channel(());
        *self.inner.stop_checkpointer.lock().unwrap_or_else(|p| p.into_inner()) = Some(stop);
        let consensus = self.clone();
        tokio::spawn(async move {
            let interval = Duration::from_millis(limits::STATE_CHECKPOINT_INTERVAL_MS);
            let pause = Duration::from_millis(limits::RECLAIM_PAUSE_MS);
            let mut durable = consensus.inner.state.applied();
            let mut checkpointed = Instant::now();
            // Deletions since the last checkpoint: they change no applied index, but need a
            // durable commit too (redb reuses freed pages only after one).
            let mut reclaimed = false;
            loop {
                let reclaiming = consensus.inner.state.compacting().unwrap_or(false);
                let wait = if reclaiming { pause } else { interval.saturating_sub(checkpointed.elapsed()) };
                // Only the stop can end the wait early (its sender is dropped).
                if tokio::time::timeout(wait, stopped.changed()).await.is_ok() {
                    return;
                }
                if reclaiming {
                    // A step of the pass over the index changes nothing on disk.
                    let deleting = !consensus.inner.state.index_pass_pending().unwrap_or(true);
                    let state = consensus.inner.state.clone();
                    let reclaim = move || state.reclaim(limits::RECLAIM_BATCH).map_err(std::io::Error::other);
                    if let Err(e) = consensus.inner.disk_io.run(reclaim).await {
                        consensus.fail(format!("deleting compacted records failed: {e}"));
                        return;
                    }
                    reclaimed |= deleting;
                    if checkpointed.elapsed() < interval {
                        continue;
                    }
                }
                checkpointed = Instant::now();
                let applied = consensus.inner.state.applied();
                if applied == durable && !reclaimed {
                    continue;
                }
                let state = consensus.inner.state.clone();
                let started = Instant::now();
                if let Err(e) = consensus
                    .inner
                    .disk_io
                    .run(move || state.checkpoint().map_err(std::io::Error::other))
                    .await
                {
                    consensus.fail(format!("state checkpoint failed: {e}"));
                    return;
                }
                consensus.inner.observer.state_committed(started.elapsed());
                durable = applied;
                reclaimed = false;
            }
        });
    }

    /// Probes every other member every `interval` with a ClusterInfo call, as etcd's
    /// prober does, for the peer round-trip histogram and the failures of members that
    /// are down. Ends when the group stops.
    fn start_prober(&self, interval: Duration) {
        let consensus = self.clone();
        let mut stopped = self.inner.removed.watch();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    _ = stopped.changed() => return,
                }
                if consensus.inner.raft.metrics().borrow_watched().running_state.is_err() {
                    return;
                }
                let members: Vec<(u64, MemberNode)> = consensus
                    .metrics()
                    .membership_config
                    .membership()
                    .nodes()
                    .filter(|(id, _)| **id != consensus.inner.member_id)
                    .map(|(id, node)| (*id, node.clone()))
                    .collect();
                let probes = members.iter().map(|(id, node)| async {
                    let started = Instant::now();
                    match consensus.inner.network.probe(*id, &node.peer_urls, interval).await {
                        Ok(()) => consensus.inner.observer.peer_round_trip(*id, started.elapsed()),
                        Err(_) => consensus.inner.observer.peer_send_failed(*id),
                    }
                });
                futures::future::join_all(probes).await;
            }
        });
    }

    /// Stops the group and makes the state durable.
    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "consensus shutdown");
        }
        self.inner.stop_checkpointer.lock().unwrap_or_else(|p| p.into_inner()).take();
        let state = self.inner.state.clone();
        let checkpoint = self.inner.disk_io.run(move || state.checkpoint().map_err(std::io::Error::other));
        if let Err(e) = checkpoint.await {
            tracing::error!(error = %e, "final checkpoint failed; the log replays on restart");
        }
    }

    /// Where this member runs its blocking disk work.
    pub fn disk_io(&self) -> DiskIo {
        self.inner.disk_io
    }
}

/// Every other member's hash of its keyspace at `revision`, with the compaction revision it
/// was taken above, or why it gave none (unreachable, compacted, not there yet), as etcd's
/// initial corruption check asks its peers. It runs before the member's consensus group
/// starts, so it reads the members from the applied state. Each ask gets `timeout`.
pub async fn peer_hashes(
    dialer: Arc<dyn Dialer>,
    state: &StateStore,
    (group, cluster_id, member_id): (GroupId, u64, u64),
    revision: i64,
    timeout: Duration,
) -> Result<Vec<(u64, Result<(u32, i64), String>)>, String> {
    let (_, stored) = crate::state_machine::read_applied(state, group).map_err(|e| e.to_string())?;
    let identity = PeerIdentity { group, member_id, cluster_id, message_bytes_max: 16 * 1024 * 1024 };
    let network = PeerNetwork::new(
        identity,
        Removed::new(member_id),
        dialer,
        DiskIo::Threads,
        Arc::new(crate::NoObserver),
    );
    let peers: Vec<(u64, MemberNode)> = stored
        .membership()
        .nodes()
        .filter(|(id, _)| **id != member_id)
        .map(|(id, node)| (*id, node.clone()))
        .collect();
    let asks = peers.into_iter().map(|(id, node)| {
        let network = network.clone();
        async move {
            let answer = async {
                let mut client = network.client(id, &node.peer_urls)?;
                let message = pb::HashKvRequest { group_id: group.0, revision };
                let call = client.hash_kv(network.request(id, message, timeout));
                let response = match tokio::time::timeout(timeout, call).await {
                    Ok(response) => response.map_err(|status| status.message().to_string())?.into_inner(),
                    Err(_) => return Err(format!("no answer within {timeout:?}")),
                };
                if !response.error.is_empty() {
                    return Err(response.error);
                }
                Ok((response.hash, response.compact_revision))
            };
            (id, answer.await)
        }
    });
    Ok(futures::future::join_all(asks).await)
}

/// Asks the members at `peer_urls` (any that answers) for the cluster id and membership,
/// as a member does before it joins an existing cluster.
pub async fn discover_cluster(
    dialer: &crate::network::GrpcDialer,
    peer_urls: &[String],
    timeout: Duration,
) -> Result<(u64, Vec<MemberInfo>), String> {
    let mut errors = Vec::new();
    for url in peer_urls {
        let endpoint = match dialer.endpoint(url) {
            Ok(endpoint) => endpoint.connect_timeout(timeout).timeout(timeout),
            Err(e) => {
                errors.push(format!("{url}: {e}"));
                continue;
            }
        };
        let answer = async {
            let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
            let mut client = synod_api::synodpb::raft_client::RaftClient::new(channel);
            client.cluster_info(pb::ClusterInfoRequest {}).await.map_err(|e| e.message().to_string())
        };
        // The whole call is bounded: a peer that accepted the connection but is not serving
        // yet (still starting, as this member is) never completes a TLS handshake.
        let answer = tokio::time::timeout(timeout, answer).await.unwrap_or_else(|_| Err("timed out".into()));
        match answer {
            Ok(response) => {
                let response = response.into_inner();
                let membership =
                    response.membership.ok_or_else(|| format!("{url}: no membership in the answer"))?;
                let membership = codec::membership_from(&membership).map_err(|e| format!("{url}: {e}"))?;
                let voters: BTreeSet<u64> = membership.voter_ids().collect();
                let members = membership
                    .nodes()
                    .map(|(id, node)| MemberInfo {
                        id: *id,
                        name: node.name.clone(),
                        peer_urls: node.peer_urls.clone(),
                        client_urls: node.client_urls.clone(),
                        is_learner: !voters.contains(id),
                        started: response.started.contains(id),
                    })
                    .collect();
                return Ok((response.cluster_id, members));
            }
            Err(e) => errors.push(format!("{url}: {e}")),
        }
    }
    Err(errors.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Errors crossing between members keep their meaning.
    #[test]
    fn errors_round_trip_as_etcd_texts() {
        for error in [
            ConsensusError::NoLeader,
            ConsensusError::LeaderChanged,
            ConsensusError::Timeout,
            ConsensusError::NotLeader,
            ConsensusError::Etcd(EtcdError::MemberNotFound),
        ] {
            assert_eq!(etcd_error_from_text(&error_text(&error)), error);
        }
    }

    /// Added members get fresh ids even for the same URLs.
    #[test]
    fn added_member_ids_differ() {
        let urls = vec!["http://127.0.0.1:1".to_string()];
        assert_ne!(added_member_id(&urls, 7), added_member_id(&urls, 7));
    }

    /// Member 1's peer transport over TCP, as a server has it.
    fn member_one_network() -> PeerNetwork {
        let identity =
            PeerIdentity { group: GroupId::FIRST, member_id: 1, cluster_id: 1, message_bytes_max: 1 << 20 };
        PeerNetwork::new(
            identity,
            Removed::new(1),
            Arc::new(crate::network::GrpcDialer::default()),
            DiskIo::Threads,
            Arc::new(crate::NoObserver),
        )
    }

    /// A leader that cannot be reached at all took no command: the caller hears "no
    /// leader", not the ambiguous "leader changed".
    #[tokio::test]
    async fn an_unreachable_leader_means_no_leader() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let network = member_one_network();
        let mut client = network.client(2, &[format!("http://127.0.0.1:{port}")]).unwrap();
        let request = pb::ForwardRequest { group_id: 0, commands: Vec::new(), batch: 0 };
        let status = client.forward(network.request(2, request, Duration::from_secs(5))).await.unwrap_err();
        assert_eq!(forward_failure(&status), ConsensusError::NoLeader, "{status:?}");
        // Likewise a forwarding stream that cannot open.
        let refused = ForwardLink::open(&mut client, &network, 2, Duration::from_secs(5)).await;
        let status = refused.err().expect("no stream to a port nobody listens on");
        assert_eq!(forward_failure(&status), ConsensusError::NoLeader, "{status:?}");
        assert_eq!(forward_failure(&tonic::Status::unknown("reset")), ConsensusError::LeaderChanged);
    }

    /// A leader that has no forwarding stream (an earlier synod, answering Unimplemented)
    /// is noted, and sent unary calls.
    #[tokio::test]
    async fn a_peer_without_streams_is_sent_unary_calls() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // A gRPC server with no services: every method is Unimplemented.
        let server = tonic::transport::Server::builder()
            .add_routes(tonic::service::Routes::default())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        let server = tokio::spawn(server);
        let network = member_one_network();
        let mut client = network.client(2, &[format!("http://127.0.0.1:{port}")]).unwrap();
        assert!(network.streams_to(2));
        let refused = ForwardLink::open(&mut client, &network, 2, Duration::from_secs(5)).await;
        let status = refused.err().expect("no forwarding stream on a server without services");
        assert!(network.note_stream_refusal(2, &status), "{status:?}");
        assert!(!network.streams_to(2), "unary calls for a while");
        assert!(!network.note_stream_refusal(3, &tonic::Status::unavailable("tcp connect error")));
        assert!(network.streams_to(3));
        server.abort();
    }

    /// Outcomes survive the trip to a follower.
    #[test]
    fn outcomes_round_trip() {
        let put = Ok(Response::Put(synod_api::etcdserverpb::PutResponse::default()));
        assert_eq!(result_to_applied(applied_to_result(&put)).unwrap(), Some(put));
        let error: Applied = Err(EtcdError::Compacted);
        assert_eq!(result_to_applied(applied_to_result(&error)).unwrap(), Some(error));
    }
}
