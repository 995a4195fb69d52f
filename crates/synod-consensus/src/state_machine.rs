//! [`StateMachine`]: openraft's state machine on synod's `StateStore`, with snapshots as
//! files.
//!
//! Applying a batch of committed entries is one `StateStore::apply`, which also records the
//! applied log id, the last membership and member attributes in the same transaction, so
//! they roll back together with the records after a crash and openraft replays from there.
//! Blank and membership entries change no key; member attributes live in the state's meta.
//!
//! A snapshot is the state exported into `member/snap/<index>-<term>-<leader>.snap` with its
//! description in a `.meta` file next to it. Building one also checkpoints the state, so the
//! log openraft purges after the snapshot is never needed to rebuild the local state.

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
use synod_storage::StateStore;

use crate::codec;
use crate::disk_io::DiskIo;
use crate::removed::Removed;
use crate::types::{Entry, LogId, Proposal, Reply, SnapshotMeta, StoredMembership, TypeConfig};

/// The file holding a snapshot's data. Cheap to clone; opened anew by every reader.
#[derive(Clone, Debug)]
pub struct SnapshotFile {
    pub path: PathBuf,
}

pub type StateSnapshot = Snapshot<crate::types::LeaderId, u64, crate::types::MemberNode, SnapshotFile>;

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
    current: Mutex<Option<(SnapshotMeta, PathBuf)>>,
    /// Held while snapshot files are renamed and deleted.
    files: Mutex<()>,
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
    /// Opens the state machine on `state`, with snapshots kept in `snapshot_dir`.
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
        let current = latest_snapshot(snapshot_dir)?;
        Ok(StateMachine {
            inner: Arc::new(Inner {
                group,
                state,
                snapshot_dir: snapshot_dir.to_path_buf(),
                applied: Mutex::new(applied),
                current: Mutex::new(current),
                files: Mutex::new(()),
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

/// The newest complete snapshot in `dir`: a `.snap` file with its `.meta` next to it.
fn latest_snapshot(dir: &Path) -> io::Result<Option<(SnapshotMeta, PathBuf)>> {
    let mut names: Vec<String> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|name| name.ends_with(".meta"))
        .collect();
    names.sort();
    let Some(name) = names.pop() else { return Ok(None) };
    let meta_path = dir.join(&name);
    let bytes = fs::read(&meta_path)?;
    let meta = pb::SnapshotMeta::decode(bytes.as_slice()).map_err(io_error)?;
    let meta = codec::snapshot_meta_from(&meta).map_err(io_error)?;
    Ok(Some((meta, meta_path.with_extension("snap"))))
}

/// The file a snapshot is built in; openraft builds one at a time.
const BUILDING_FILE: &str = "building.tmp";

/// Deletes what a crash left behind: a snapshot being built or received, and meta files
/// not yet renamed into place.
fn remove_leftovers(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)?.filter_map(|e| e.ok()) {
        let file_name = entry.file_name();
        let file_name = file_name.to_str().unwrap_or_default();
        if file_name == BUILDING_FILE
            || file_name.starts_with("incoming-")
            || file_name.ends_with(".meta.tmp")
        {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

fn snapshot_name(meta: &SnapshotMeta) -> String {
    match meta.last_log_id {
        Some(id) => format!("{:020}-{}-{}", id.index, id.leader_id.term, id.leader_id.node_id),
        None => "00000000000000000000-0-0".to_string(),
    }
}

/// The log index a snapshot file is named after, if `name` is one of a snapshot's files.
fn snapshot_file_index(name: &str) -> Option<u64> {
    let is_snapshot_file = [".snap", ".meta", ".meta.tmp"].iter().any(|suffix| name.ends_with(suffix));
    if !is_snapshot_file {
        return None;
    }
    name.get(..20).and_then(|digits| digits.parse().ok())
}

impl Inner {
    /// Makes `data` the current snapshot described by `meta`, unless the current one is
    /// newer (a build that finished after an install): moves it to its final name, writes
    /// the meta file, syncs both and the directory, and deletes the older snapshots' files,
    /// never a file still being built or received. Returns the snapshot now current.
    ///
    /// A build and an install may run at the same time (openraft builds on a task of its
    /// own); `files` keeps them from interleaving here.
    fn make_current(&self, meta: &SnapshotMeta, data: &Path) -> io::Result<(SnapshotMeta, PathBuf)> {
        let _files = lock(&self.files);
        let dir = &self.snapshot_dir;
        let name = snapshot_name(meta);
        let final_data = dir.join(format!("{name}.snap"));
        if let Some((current, path)) = lock(&self.current).clone()
            && current.last_log_id > meta.last_log_id
        {
            if data != path {
                let _ = fs::remove_file(data);
            }
            return Ok((current, path));
        }
        if data != final_data {
            fs::rename(data, &final_data)?;
        }
        fs::File::open(&final_data)?.sync_all()?;
        let meta_tmp = dir.join(format!("{name}.meta.tmp"));
        {
            let mut file = fs::File::create(&meta_tmp)?;
            file.write_all(&codec::snapshot_meta(meta).encode_to_vec())?;
            file.sync_all()?;
        }
        fs::rename(&meta_tmp, dir.join(format!("{name}.meta")))?;
        fs::File::open(dir)?.sync_all()?;
        *lock(&self.current) = Some((meta.clone(), final_data.clone()));
        let index = meta.last_log_id.map_or(0, |l| l.index);
        for entry in fs::read_dir(dir)?.filter_map(|e| e.ok()) {
            let file_name = entry.file_name();
            let file_name = file_name.to_str().unwrap_or_default();
            let older = snapshot_file_index(file_name).is_some_and(|i| i <= index);
            if older && !file_name.starts_with(&name) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok((meta.clone(), final_data))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<StateSnapshot, io::Error> {
        let inner = self.inner.clone();
        let (meta, path) = self
            .inner
            .disk_io
            .run(move || {
                let group = inner.group;
                let building = inner.snapshot_dir.join(BUILDING_FILE);
                let keys = [applied_key(group), membership_key(group)];
                let (_, values) = {
                    let mut out = BufWriter::new(fs::File::create(&building)?);
                    let exported = inner
                        .state
                        .export(&mut out, &[keys[0].as_str(), keys[1].as_str()])
                        .map_err(io_error)?;
                    out.flush()?;
                    exported
                };
                let last_log_id = codec::decode_log_id(values[0].as_deref()).map_err(io_error)?;
                let last_membership = codec::decode_membership(values[1].as_deref()).map_err(io_error)?;
                // Durable state at or past the snapshot before openraft may purge the log behind
                // it.
                inner.state.checkpoint().map_err(io_error)?;
                let meta = SnapshotMeta { last_log_id, last_membership };
                inner.make_current(&meta, &building)
            })
            .await?;
        tracing::info!(group = self.inner.group.0, last_log_id = ?meta.last_log_id.map(|l| l.index), "built snapshot");
        Ok(Snapshot { meta, snapshot: SnapshotFile { path } })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;
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
        snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        let inner = self.inner.clone();
        let meta = meta.clone();
        let installed = meta.clone();
        self.inner
            .disk_io
            .run(move || {
                let already = lock(&inner.applied).0;
                // At startup openraft hands back our own current snapshot when it is newer than
                // the durable state; a snapshot the state already covers needs no import.
                if already < meta.last_log_id {
                    let mut input = BufReader::new(fs::File::open(&snapshot.path)?);
                    inner.state.import(&mut input).map_err(io_error)?;
                    inner.installed.fetch_add(1, Ordering::Relaxed);
                    inner.removed.set(read_removed(&inner.state, inner.group)?);
                }
                inner.make_current(&meta, &snapshot.path)?;
                let mut applied = lock(&inner.applied);
                if applied.0 < meta.last_log_id {
                    *applied = (meta.last_log_id, meta.last_membership.clone());
                }
                Ok(())
            })
            .await?;
        tracing::info!(group = self.inner.group.0, last_log_id = ?installed.last_log_id.map(|l| l.index), "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<StateSnapshot>, io::Error> {
        Ok(lock(&self.inner.current).as_ref().map(|(meta, path)| Snapshot {
            meta: meta.clone(),
            snapshot: SnapshotFile { path: path.clone() },
        }))
    }
}
