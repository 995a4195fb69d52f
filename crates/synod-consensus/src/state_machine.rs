//! [`StateMachine`]: openraft's state machine on synod's `StateStore`.
//!
//! Applying a batch of committed entries is one `StateStore::apply`, which also records the
//! applied log id, the last membership and member attributes in the same transaction, so
//! they roll back together with the records after a crash and openraft replays from there.
//! Blank and membership entries change no key; member attributes live in the state's meta.
//!
//! The state file is the snapshot, as etcd's backend is its: "building" one makes the state
//! durable (a checkpoint), so that the log openraft purges behind it is never needed to
//! rebuild the local state, and nothing is copied. A member that must send a snapshot takes
//! a consistent view of its state when openraft asks for the current snapshot and exports it
//! while it streams (see `network.rs`); the member that receives it builds a new state file
//! from the stream as it arrives (see `peer_service.rs`), which the install swaps in.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, BufReader, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::{Stream, TryStreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend};
use prost::Message;
use synod_api::synodpb::{self as pb, Command, command};
use synod_base::{GroupId, LogIndex};
use synod_storage::{PreparedState, StateStore, StateView};

use crate::codec;
use crate::disk_io::DiskIo;
use crate::removed::Removed;
use crate::types::{Entry, LogId, Proposal, Reply, SnapshotMeta, StoredMembership, TypeConfig};

/// A snapshot's data.
#[derive(Debug)]
pub enum SnapshotData {
    /// The local state as of the snapshot, exported when it is sent.
    View(Box<StateView>),
    /// A snapshot received from the leader, built beside the local state as it arrived
    /// and checked; installing it swaps it in.
    Received(Received),
}

/// A received snapshot's state, until it is installed. openraft drops one it refuses (a
/// stale vote, or one a retried transfer brought after the first was installed) on its
/// core task; closing its file and freeing its index take a while, so that happens on a
/// blocking thread.
#[derive(Debug)]
pub struct Received {
    prepared: Option<Box<PreparedState>>,
    disk_io: DiskIo,
}

impl Received {
    pub(crate) fn new(prepared: PreparedState, disk_io: DiskIo) -> Received {
        Received { prepared: Some(Box::new(prepared)), disk_io }
    }

    fn take(mut self) -> PreparedState {
        *self.prepared.take().expect("a received snapshot holds its state until installed")
    }
}

impl Drop for Received {
    fn drop(&mut self) {
        let Some(prepared) = self.prepared.take() else {
            return;
        };
        match (self.disk_io, tokio::runtime::Handle::try_current()) {
            (DiskIo::Threads, Ok(runtime)) => drop(runtime.spawn_blocking(move || drop(prepared))),
            // The simulator's are in memory, and cheap to drop.
            _ => drop(prepared),
        }
    }
}

pub type StateSnapshot = Snapshot<crate::types::LeaderId, u64, crate::types::MemberNode, SnapshotData>;

fn applied_key(group: GroupId) -> String {
    format!("raft/applied/{}", group.0)
}
fn membership_key(group: GroupId) -> String {
    format!("raft/membership/{}", group.0)
}
pub(crate) fn member_key(group: GroupId, id: u64) -> String {
    format!("raft/member/{}/{id}", group.0)
}
fn removed_key(group: GroupId) -> String {
    format!("raft/removed/{}", group.0)
}

fn io_error(error: impl std::fmt::Display) -> io::Error {
    io::Error::other(error.to_string())
}

struct Inner {
    group: GroupId,
    state: Arc<StateStore>,
    snapshot_dir: PathBuf,
    applied: Mutex<(Option<LogId>, StoredMembership)>,
    /// Snapshots received from a leader and imported since the member started.
    installed: AtomicU64,
    removed: Removed,
    disk_io: DiskIo,
}

/// openraft's state machine and snapshot builder for one consensus group.
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Inner>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl StateMachine {
    /// Opens the state machine on `state`. `snapshot_dir` holds the file a local view is
    /// installed through, and snapshot files of earlier versions, which are deleted here.
    pub(crate) fn open(
        state: Arc<StateStore>,
        group: GroupId,
        snapshot_dir: &Path,
        removed: Removed,
        disk_io: DiskIo,
    ) -> io::Result<StateMachine> {
        fs::create_dir_all(snapshot_dir)?;
        remove_leftovers(snapshot_dir)?;
        let applied = read_applied(&state, group)?;
        removed.set(read_removed(&state, group)?);
        Ok(StateMachine {
            inner: Arc::new(Inner {
                group,
                state,
                snapshot_dir: snapshot_dir.to_path_buf(),
                applied: Mutex::new(applied),
                installed: AtomicU64::new(0),
                removed,
                disk_io,
            }),
        })
    }

    /// The last applied log id and membership.
    pub fn applied(&self) -> (Option<LogId>, StoredMembership) {
        lock(&self.inner.applied).clone()
    }

    /// How many snapshots from a leader this member imported since it started.
    pub fn snapshots_installed(&self) -> u64 {
        self.inner.installed.load(Ordering::Relaxed)
    }

    async fn apply_batch(
        &self,
        batch: Vec<(Entry, Option<openraft::storage::ApplyResponder<TypeConfig>>)>,
    ) -> io::Result<()> {
        let group = self.inner.group;
        let state = self.inner.state.clone();
        let last_log_id = batch.last().map(|(e, _)| e.log_id).expect("batches are not empty");
        let mut membership = None;
        let mut extra: Vec<(String, Vec<u8>)> = Vec::new();
        // Members that a membership in this batch leaves out are removed for good.
        let mut members: BTreeSet<u64> =
            lock(&self.inner.applied).1.membership().nodes().map(|(id, _)| *id).collect();
        let mut gone = BTreeSet::new();
        for (entry, _) in &batch {
            match &entry.payload {
                EntryPayload::Membership(m) => {
                    let now: BTreeSet<u64> = m.nodes().map(|(id, _)| *id).collect();
                    gone.extend(members.difference(&now).copied());
                    members = now;
                    membership = Some(StoredMembership::new(Some(entry.log_id), m.clone()));
                }
                EntryPayload::Normal(Proposal(Command {
                    op: Some(command::Op::MemberAttributes(a)),
                    ..
                })) => {
                    extra.push((member_key(group, a.member_id), a.encode_to_vec()));
                }
                _ => {}
            }
        }
        if !gone.is_empty() {
            tracing::info!(?gone, through = %last_log_id, "members removed for good");
            let ids = self.inner.removed.add(gone).into_iter().collect();
            extra.push((removed_key(group), pb::RemovedMembers { ids }.encode_to_vec()));
        }
        extra.push((applied_key(group), codec::log_id(&last_log_id).encode_to_vec()));
        if let Some(m) = &membership {
            extra.push((membership_key(group), codec::stored_membership(m).encode_to_vec()));
        }
        let (batch, outcomes) = self
            .inner
            .disk_io
            .run(move || {
                let entries: Vec<(LogIndex, Option<&Command>)> = batch
                    .iter()
                    .map(|(entry, _)| {
                        let command = match &entry.payload {
                            EntryPayload::Normal(Proposal(c))
                                if !matches!(c.op, Some(command::Op::MemberAttributes(_))) =>
                            {
                                Some(c)
                            }
                            _ => None,
                        };
                        (LogIndex(entry.index()), command)
                    })
                    .collect();
                let extra: Vec<(&str, &[u8])> =
                    extra.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
                let outcomes = state.apply(&entries, &extra).map_err(io_error)?;
                Ok((batch, outcomes))
            })
            .await?;
        {
            let mut applied = lock(&self.inner.applied);
            applied.0 = Some(last_log_id);
            if let Some(m) = membership {
                applied.1 = m;
            }
        }
        for ((_, responder), outcome) in batch.into_iter().zip(outcomes) {
            if let Some(responder) = responder {
                responder.send(Reply(outcome));
            }
        }
        Ok(())
    }
}

fn read_removed(state: &StateStore, group: GroupId) -> io::Result<BTreeSet<u64>> {
    Ok(match state.meta_value(&removed_key(group)).map_err(io_error)? {
        Some(bytes) => {
            pb::RemovedMembers::decode(bytes.as_slice()).map_err(io_error)?.ids.into_iter().collect()
        }
        None => BTreeSet::new(),
    })
}

pub(crate) fn read_applied(
    state: &StateStore,
    group: GroupId,
) -> io::Result<(Option<LogId>, StoredMembership)> {
    let applied = state.meta_value(&applied_key(group)).map_err(io_error)?;
    let membership = state.meta_value(&membership_key(group)).map_err(io_error)?;
    Ok((
        codec::decode_log_id(applied.as_deref()).map_err(io_error)?,
        codec::decode_membership(membership.as_deref()).map_err(io_error)?,
    ))
}

/// The file a snapshot that was never sent (a view of another store, which only openraft's
/// conformance suite hands over) is written to before it is imported.
const VIEW_FILE: &str = "view.tmp";

/// Deletes what a crash left behind: a view being installed, snapshots earlier versions
/// received here, and the exported snapshots (`.snap`, `.meta`) that synod kept before the
/// state file became the snapshot; the state they held is in the state file.
fn remove_leftovers(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)?.filter_map(|e| e.ok()) {
        let file_name = entry.file_name();
        let file_name = file_name.to_str().unwrap_or_default();
        let ours = file_name.starts_with("incoming-")
            || [".tmp", ".snap", ".meta"].iter().any(|suffix| file_name.ends_with(suffix));
        if ours {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// The snapshot a view of the state is: its applied log id and membership as of the view.
fn view_snapshot(group: GroupId, view: StateView) -> io::Result<StateSnapshot> {
    let last_log_id =
        codec::decode_log_id(view.meta_value(&applied_key(group)).map_err(io_error)?.as_deref())
            .map_err(io_error)?;
    let last_membership =
        codec::decode_membership(view.meta_value(&membership_key(group)).map_err(io_error)?.as_deref())
            .map_err(io_error)?;
    Ok(Snapshot {
        meta: SnapshotMeta { last_log_id, last_membership },
        snapshot: SnapshotData::View(Box::new(view)),
    })
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<StateSnapshot, io::Error> {
        let inner = self.inner.clone();
        let snapshot = self
            .inner
            .disk_io
            .run(move || {
                let view = inner.state.view().map_err(io_error)?;
                // Durable state at or past the view before openraft may purge the log behind it.
                inner.state.checkpoint().map_err(io_error)?;
                view_snapshot(inner.group, view)
            })
            .await?;
        tracing::info!(group = self.inner.group.0, last_log_id = ?snapshot.meta.last_log_id.map(|l| l.index), "state checkpointed as a snapshot");
        Ok(snapshot)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok(self.applied())
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut batch = Vec::new();
        while let Some(item) = entries.try_next().await? {
            batch.push(item);
            if batch.len() >= synod_base::limits::LOG_BATCH_ENTRIES_MAX {
                self.apply_batch(std::mem::take(&mut batch)).await?;
            }
        }
        if !batch.is_empty() {
            self.apply_batch(batch).await?;
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let inner = self.inner.clone();
        let meta = meta.clone();
        let installed = meta.clone();
        let started = std::time::Instant::now();
        self.inner
            .disk_io
            .run(move || {
                let already = lock(&inner.applied).0;
                if already >= meta.last_log_id {
                    return Ok(());
                }
                match snapshot {
                    SnapshotData::Received(received) => {
                        inner.state.install(received.take()).map_err(io_error)?
                    }
                    SnapshotData::View(view) => {
                        let path = inner.snapshot_dir.join(VIEW_FILE);
                        {
                            let mut out = BufWriter::new(fs::File::create(&path)?);
                            view.export(&mut out).map_err(io_error)?;
                            out.flush()?;
                        }
                        let mut input = BufReader::new(fs::File::open(&path)?);
                        inner.state.import(&mut input).map_err(io_error)?;
                        fs::remove_file(&path)?;
                    }
                }
                inner.installed.fetch_add(1, Ordering::Relaxed);
                inner.removed.set(read_removed(&inner.state, inner.group)?);
                *lock(&inner.applied) = (meta.last_log_id, meta.last_membership.clone());
                Ok(())
            })
            .await?;
        tracing::info!(
            group = self.inner.group.0,
            last_log_id = ?installed.last_log_id.map(|l| l.index),
            secs = started.elapsed().as_secs_f64(),
            "installed snapshot"
        );
        Ok(())
    }

    /// The state as it is now, if anything is applied: the state file is the snapshot.
    async fn get_current_snapshot(&mut self) -> Result<Option<StateSnapshot>, io::Error> {
        let inner = self.inner.clone();
        let snapshot = self
            .inner
            .disk_io
            .run(move || view_snapshot(inner.group, inner.state.view().map_err(io_error)?))
            .await?;
        Ok(snapshot.meta.last_log_id.is_some().then_some(snapshot))
    }
}
