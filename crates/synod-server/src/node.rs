//! The consensus facade: the one place the API layer hands commands to and waits on.
//!
//! [`Node::propose`] puts a command into the replicated log and returns its applied outcome;
//! [`Node::read_barrier`] makes a following read linearizable; [`Node::status`] reports the
//! raft view. This implementation is a single-member group: the log writer makes each
//! batch durable (one fsync) and then applies it, which is exactly what a one-member raft
//! group does, minus the network. Multi-member replication replaces the inside of this
//! module, not its callers.
//!
//! Threads, not tasks, do the disk work, because every commit blocks on fsync:
//! - the **log writer** takes every pending proposal (up to a batch limit), appends them in
//!   one durable commit (group commit), applies them, and replies to each caller;
//! - the **checkpointer** makes the applied state durable every
//!   `STATE_CHECKPOINT_INTERVAL_MS` and decides how far the log may be purged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prost::Message;
use synod_api::synodpb::{Command, HardState, Identity};
use synod_base::{GroupId, LogIndex, limits};
use synod_mvcc::Applied;
use synod_storage::{LogStore, StateStore, StorageError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use crate::metrics::Metrics;

/// Why a proposal did not produce an outcome.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error("too many pending proposals")]
    TooManyRequests,
    #[error("the member is stopping")]
    Stopped,
    #[error("the proposal did not complete in time")]
    Timeout,
    #[error("the member stopped on a storage failure: {0}")]
    Failed(String),
}

/// What the consensus layer knows about itself, for Status.
#[derive(Clone, Copy, Debug)]
pub struct NodeStatus {
    pub term: u64,
    pub leader: u64,
    pub commit_index: LogIndex,
    pub applied_index: LogIndex,
}

struct Proposal {
    command: Command,
    encoded: Vec<u8>,
    reply: oneshot::Sender<Result<Applied, NodeError>>,
    /// This proposal's share of the pending-bytes budget, returned when it is dropped.
    _budget: OwnedSemaphorePermit,
}

/// Permits of the pending-bytes budget a proposal of `bytes` takes (one per KiB begun).
fn budget_permits(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX)
}

/// Format version of a log entry; bumped if the entry layout ever changes.
const ENTRY_FORMAT: u8 = 1;
const HARD_STATE_KEY: &str = "hard_state/0";

/// A log entry as stored: format byte, term, then the encoded command.
fn encode_entry(term: u64, command: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + command.len());
    out.push(ENTRY_FORMAT);
    out.extend_from_slice(&term.to_le_bytes());
    out.extend_from_slice(command);
    out
}

fn decode_entry(index: LogIndex, bytes: &[u8]) -> Result<Command, StorageError> {
    let corrupt = |detail: String| StorageError::Corrupt { what: format!("log entry {index}"), detail };
    match bytes.first() {
        Some(&ENTRY_FORMAT) if bytes.len() >= 9 => {}
        Some(&format) => return Err(corrupt(format!("unknown entry format {format}"))),
        None => return Err(corrupt("empty entry".into())),
    }
    Command::decode(&bytes[9..]).map_err(|e| corrupt(format!("undecodable command: {e}")))
}

struct Shared {
    group: GroupId,
    identity: Identity,
    term: u64,
    log: LogStore,
    state: Arc<StateStore>,
    metrics: Arc<Metrics>,
    commit_index: AtomicU64,
    first_index: AtomicU64,
    /// Set by the checkpointer, taken by the log writer with its next append.
    purge_through: AtomicU64,
    snapshot_count: u64,
    failure: watch::Sender<Option<String>>,
}

impl Shared {
    /// Records a storage failure; the member must stop serving. Logged here, once.
    fn fail(&self, what: &str, error: &StorageError) -> NodeError {
        self.fail_with(format!("{what}: {error}"))
    }

    fn fail_with(&self, message: String) -> NodeError {
        tracing::error!(error = %message, "the member stops");
        self.failure.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(message.clone());
                true
            } else {
                false
            }
        });
        NodeError::Failed(message)
    }
}

pub struct Node {
    shared: Arc<Shared>,
    proposals: Mutex<Option<mpsc::Sender<Proposal>>>,
    /// Bytes of proposals queued or being written, in KiB permits: bounds the memory that
    /// clients can make the member hold, whatever the size of their requests.
    pending_budget: Arc<Semaphore>,
    stop_checkpointer: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Node {
    /// Starts the member's consensus group: bumps the term (a one-member group elects
    /// itself on every start), replays the log entries the durable state has not seen, and
    /// starts the log writer and the checkpointer.
    pub fn start(
        identity: Identity,
        log: LogStore,
        state: Arc<StateStore>,
        metrics: Arc<Metrics>,
        snapshot_count: u64,
    ) -> Result<Node, StorageError> {
        let group = state.group();
        let mut hard_state = match log.meta(HARD_STATE_KEY)? {
            Some(bytes) => HardState::decode(bytes.as_slice())
                .map_err(|e| StorageError::Corrupt { what: "hard state".into(), detail: e.to_string() })?,
            None => HardState::default(),
        };
        hard_state.term += 1;
        log.put_meta(HARD_STATE_KEY, &hard_state.encode_to_vec())?;

        let last = replay(&log, &state, group)?;
        // Make the replayed state durable now, so a crash soon after does not replay again.
        state.checkpoint()?;
        let first = log.bounds(group)?.map_or(last.0 + 1, |(first, _)| first.0);
        let (failure, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            group,
            identity,
            term: hard_state.term,
            log,
            state,
            metrics,
            commit_index: AtomicU64::new(last.0),
            first_index: AtomicU64::new(first),
            purge_through: AtomicU64::new(0),
            snapshot_count,
            failure,
        });
        shared.metrics.has_leader.set(1);
        shared.metrics.is_leader.set(1);
        shared.metrics.proposals_committed.set(last.0 as i64);
        shared.metrics.proposals_applied.set(last.0 as i64);
        shared.metrics.log_first_index.set(first as i64);

        let (sender, receiver) = mpsc::channel(limits::PROPOSALS_PENDING_MAX);
        let (stop_tx, stop_rx) = std::sync::mpsc::channel();
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("synod-log-writer".into())
                .spawn(move || {
                    // A panic here is a bug; it must stop the member, not leave it serving
                    // reads while every write waits for a thread that is gone.
                    let run =
                        std::panic::AssertUnwindSafe(|| write_loop(&shared, receiver, LogIndex(last.0 + 1)));
                    if let Err(panic) = std::panic::catch_unwind(run) {
                        let message = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        shared.fail_with(format!("the log writer panicked: {message}"));
                    }
                })
                .map_err(|source| StorageError::Io { path: "log writer thread".into(), source })?
        };
        let checkpointer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("synod-checkpoint".into())
                .spawn(move || checkpoint_loop(&shared, stop_rx))
                .map_err(|source| StorageError::Io { path: "checkpoint thread".into(), source })?
        };
        tracing::info!(
            member_id = %format!("{:x}", shared.identity.member_id),
            term = shared.term,
            commit_index = last.0,
            "member is the leader of its single-member group"
        );
        Ok(Node {
            shared,
            proposals: Mutex::new(Some(sender)),
            pending_budget: Arc::new(Semaphore::new((limits::PROPOSALS_PENDING_BYTES_MAX / 1024) as usize)),
            stop_checkpointer: Mutex::new(Some(stop_tx)),
            threads: Mutex::new(vec![writer, checkpointer]),
        })
    }

    pub fn identity(&self) -> &Identity {
        &self.shared.identity
    }

    pub fn term(&self) -> u64 {
        self.shared.term
    }

    /// Resolves when the member hits a storage failure and must stop.
    pub fn failure(&self) -> watch::Receiver<Option<String>> {
        self.shared.failure.subscribe()
    }

    pub fn status(&self) -> NodeStatus {
        NodeStatus {
            term: self.shared.term,
            leader: self.shared.identity.member_id,
            commit_index: LogIndex(self.shared.commit_index.load(Ordering::Acquire)),
            applied_index: self.shared.state.applied_index(),
        }
    }

    /// Replicates `command` (already encoded as `encoded`) and returns its outcome once
    /// applied. Fails fast with [`NodeError::TooManyRequests`] when too many proposals, or
    /// too many bytes of them, are waiting.
    ///
    /// Cancel safety: dropping the future does not withdraw the proposal; it may still be
    /// applied, as in etcd. Retrying a non-idempotent command after a timeout can apply it
    /// twice.
    pub async fn propose(&self, command: Command, encoded: Vec<u8>) -> Result<Applied, NodeError> {
        if let Some(message) = self.shared.failure.borrow().clone() {
            return Err(NodeError::Failed(message));
        }
        let sender =
            self.proposals.lock().unwrap_or_else(|p| p.into_inner()).clone().ok_or(NodeError::Stopped)?;
        let budget = self
            .pending_budget
            .clone()
            .try_acquire_many_owned(budget_permits(encoded.len()))
            .map_err(|_| NodeError::TooManyRequests)?;
        let (reply, outcome) = oneshot::channel();
        sender.try_send(Proposal { command, encoded, reply, _budget: budget }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => NodeError::TooManyRequests,
            mpsc::error::TrySendError::Closed(_) => NodeError::Stopped,
        })?;
        self.shared.metrics.proposals_pending.inc();
        let timeout = Duration::from_millis(limits::REQUEST_TIMEOUT_MS);
        match tokio::time::timeout(timeout, outcome).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(NodeError::Stopped),
            Err(_) => Err(NodeError::Timeout),
        }
    }

    /// Waits until a read of the local state is linearizable. In a single-member group a
    /// write is acknowledged only after it is applied here, so the applied state already
    /// holds every acknowledged write.
    pub async fn read_barrier(&self) -> Result<(), NodeError> {
        if let Some(message) = self.shared.failure.borrow().clone() {
            return Err(NodeError::Failed(message));
        }
        Ok(())
    }

    /// Makes everything applied so far durable now.
    pub fn checkpoint(&self) -> Result<LogIndex, NodeError> {
        self.shared.state.checkpoint().map_err(|e| self.shared.fail("state checkpoint failed", &e))
    }

    /// Stops taking proposals, finishes the ones queued, and makes the state durable.
    pub fn shutdown(&self) {
        self.proposals.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.stop_checkpointer.lock().unwrap_or_else(|p| p.into_inner()).take();
        let threads: Vec<JoinHandle<()>> =
            self.threads.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect();
        for thread in threads {
            if thread.join().is_err() {
                tracing::error!("a storage thread panicked");
            }
        }
        if self.shared.failure.borrow().is_none()
            && let Err(e) = self.shared.state.checkpoint()
        {
            tracing::error!(error = %e, "final checkpoint failed; the log replays on restart");
        }
    }
}

/// Applies the log entries after the durable applied index and returns the last index.
fn replay(log: &LogStore, state: &StateStore, group: GroupId) -> Result<LogIndex, StorageError> {
    let applied = state.applied_index();
    let Some((first, last)) = log.bounds(group)? else {
        return Ok(applied);
    };
    // Every applied entry was appended first, and purges keep the tail, so a log that ends
    // before the applied index does not belong with this state (an old backup, say).
    if last < applied {
        return Err(StorageError::Corrupt {
            what: "log".into(),
            detail: format!("the log ends at entry {last} but the state has applied entry {applied}"),
        });
    }
    if last == applied {
        return Ok(applied);
    }
    if first.0 > applied.0 + 1 {
        return Err(StorageError::Corrupt {
            what: "log".into(),
            detail: format!(
                "the state is at entry {applied} but the log starts at {first}: entries {}..{} are missing",
                applied.0 + 1,
                first.0 - 1
            ),
        });
    }
    let started = Instant::now();
    let mut next = LogIndex(applied.0 + 1);
    while next <= last {
        let chunk = log.entries(group, next, limits::LOG_BATCH_ENTRIES_MAX)?;
        if chunk.is_empty() {
            return Err(StorageError::Corrupt {
                what: "log".into(),
                detail: format!("entry {next} is missing below the last entry {last}"),
            });
        }
        let commands: Vec<(LogIndex, Command)> = chunk
            .iter()
            .map(|(i, bytes)| decode_entry(*i, bytes).map(|c| (*i, c)))
            .collect::<Result<_, _>>()?;
        let entries: Vec<(LogIndex, Option<&Command>)> =
            commands.iter().map(|(i, c)| (*i, Some(c))).collect();
        state.apply(&entries, &[])?;
        next = LogIndex(commands.last().expect("chunk is not empty").0.0 + 1);
    }
    tracing::info!(
        from = applied.0 + 1,
        to = last.0,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "replayed log entries"
    );
    Ok(last)
}

fn write_loop(shared: &Shared, mut proposals: mpsc::Receiver<Proposal>, mut next: LogIndex) {
    let mut batch: Vec<Proposal> = Vec::new();
    while let Some(first) = proposals.blocking_recv() {
        let mut bytes = first.encoded.len() as u64;
        batch.push(first);
        while batch.len() < limits::LOG_BATCH_ENTRIES_MAX && bytes < limits::LOG_BATCH_BYTES_MAX {
            match proposals.try_recv() {
                Ok(proposal) => {
                    bytes += proposal.encoded.len() as u64;
                    batch.push(proposal);
                }
                Err(_) => break,
            }
        }
        let outcome = commit_batch(shared, &batch, next);
        shared.metrics.proposals_pending.dec_by(batch.len() as i64);
        match outcome {
            Ok(outcomes) => {
                next = LogIndex(next.0 + batch.len() as u64);
                for (proposal, outcome) in batch.drain(..).zip(outcomes) {
                    let outcome = outcome.expect("every proposal carries a command");
                    // The caller may have given up waiting; the outcome stands regardless.
                    let _ = proposal.reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                shared.metrics.proposals_failed.inc_by(batch.len() as u64);
                for proposal in batch.drain(..) {
                    let _ = proposal.reply.send(Err(error.clone()));
                }
                // Fail everything still queued, then stop: the member is not usable.
                proposals.close();
                while let Ok(proposal) = proposals.try_recv() {
                    shared.metrics.proposals_pending.dec();
                    let _ = proposal.reply.send(Err(error.clone()));
                }
                return;
            }
        }
    }
}

/// Makes a batch durable in the log, then applies it.
fn commit_batch(
    shared: &Shared,
    batch: &[Proposal],
    first: LogIndex,
) -> Result<Vec<Option<Applied>>, NodeError> {
    let encoded: Vec<Vec<u8>> = batch.iter().map(|p| encode_entry(shared.term, &p.encoded)).collect();
    let entries: Vec<(LogIndex, &[u8])> =
        encoded.iter().enumerate().map(|(i, e)| (LogIndex(first.0 + i as u64), e.as_slice())).collect();
    let last = entries.last().expect("a batch is never empty").0;
    let purge = match shared.purge_through.swap(0, Ordering::AcqRel) {
        0 => None,
        through => Some(LogIndex(through)),
    };
    let started = Instant::now();
    shared.log.append(shared.group, &entries, purge).map_err(|e| shared.fail("log append failed", &e))?;
    Metrics::observe_seconds(&shared.metrics.wal_fsync_seconds, started.elapsed());
    shared.metrics.log_batch_entries.observe(batch.len() as f64);
    if let Some(through) = purge {
        shared.first_index.store(through.0 + 1, Ordering::Release);
        shared.metrics.log_first_index.set(through.0 as i64 + 1);
    }
    shared.commit_index.store(last.0, Ordering::Release);
    shared.metrics.proposals_committed.set(last.0 as i64);

    let applying: Vec<(LogIndex, Option<&Command>)> =
        batch.iter().enumerate().map(|(i, p)| (LogIndex(first.0 + i as u64), Some(&p.command))).collect();
    let outcomes = shared.state.apply(&applying, &[]).map_err(|e| shared.fail("apply failed", &e))?;
    shared.metrics.proposals_applied.set(last.0 as i64);
    Ok(outcomes)
}

fn checkpoint_loop(shared: &Shared, stop: std::sync::mpsc::Receiver<()>) {
    let interval = Duration::from_millis(limits::STATE_CHECKPOINT_INTERVAL_MS);
    let mut durable = shared.state.applied_index();
    loop {
        match stop.recv_timeout(interval) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        if shared.failure.borrow().is_some() {
            return;
        }
        // An idle member does not sync: nothing new to make durable.
        if shared.state.applied_index() == durable {
            continue;
        }
        let started = Instant::now();
        match shared.state.checkpoint() {
            Ok(index) => durable = index,
            Err(e) => {
                shared.fail("state checkpoint failed", &e);
                return;
            }
        }
        Metrics::observe_seconds(&shared.metrics.backend_commit_seconds, started.elapsed());
        let stats = shared.state.stats();
        shared.metrics.db_size_bytes.set(stats.size_bytes as i64);
        shared.metrics.db_size_in_use_bytes.set(stats.in_use_bytes as i64);
        if let Ok(revision) = shared.state.current_revision() {
            shared.metrics.current_revision.set(revision);
        }
        // Purge once `snapshot_count` entries have accumulated, keeping a tail for
        // followers to catch up from; never beyond what the state has made durable.
        let first = shared.first_index.load(Ordering::Acquire);
        if durable.0 >= first + shared.snapshot_count + limits::LOG_CATCHUP_ENTRIES {
            shared.purge_through.store(durable.0 - limits::LOG_CATCHUP_ENTRIES, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_api::etcdserverpb::PutRequest;
    use synod_api::synodpb::command;

    /// The pending budget counts every begun KiB and never rounds a proposal down to zero.
    #[test]
    fn budget_permits_round_up() {
        assert_eq!(budget_permits(0), 1);
        assert_eq!(budget_permits(1), 1);
        assert_eq!(budget_permits(1024), 1);
        assert_eq!(budget_permits(1025), 2);
        assert_eq!(budget_permits(1_572_864), 1536);
    }

    /// An entry decodes to the command it was made from; damage is reported, not guessed.
    #[test]
    fn entries_round_trip() {
        let command = Command {
            op: Some(command::Op::Put(PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
        };
        let entry = encode_entry(3, &command.encode_to_vec());
        assert_eq!(decode_entry(LogIndex(1), &entry).unwrap(), command);
        let mut other_format = entry.clone();
        other_format[0] = 9;
        assert!(decode_entry(LogIndex(1), &other_format).is_err());
        assert!(decode_entry(LogIndex(1), &[]).is_err());
    }
}
