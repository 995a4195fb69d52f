//! [`StateStore`]: the MVCC state machine of a consensus group, kept in `state.redb`.
//!
//! Applying a batch of log entries is one redb write transaction with
//! `Durability::None`: visible to readers at once, durable only at the next
//! [`StateStore::checkpoint`], which commits with `Durability::Immediate` (and quick repair,
//! so a restart after a crash does not rescan the file). The applied index is written in
//! the same transactions as the records, so after a crash records and applied index roll
//! back together and the log replays from there.
//!
//! Concurrency: the in-memory key index sits behind a lock that applies hold for writing.
//! A reader plans its Range and opens its redb snapshot under that lock, then reads the
//! records without it; since an apply commits before it releases the lock, the snapshot
//! always holds every record the plan refers to, even if a compaction runs meanwhile.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use prost::Message;
use redb::{
    Database, Durability, ReadOnlyTable, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table,
    TableDefinition,
};
use synod_api::EtcdError;
use synod_api::etcdserverpb::{AlarmMember, RangeRequest, RangeResponse, TxnRequest, TxnResponse};
use synod_api::mvccpb::KeyValue;
use synod_api::synodpb::{AuthState, Command, CounterSession, LeaseRecord};
use synod_base::{GroupId, LogIndex};
use synod_mvcc::{
    Applied, BackendError, KvStore, Meta, Restoring, Rev, RevisionRead, RevisionWrite, StoredKv,
};

use crate::error::engine;
use crate::{StorageError, record};

type KvKey = (u64, u64);
type KvTable<'txn> = Table<'txn, KvKey, &'static [u8]>;

const APPLIED_INDEX: &str = "applied_index";
const REVISION: &str = "revision";
const COMPACT_REVISION: &str = "compact_revision";
const ALARMS: &str = "alarms";
/// Users, roles and whether auth is on: one `AuthState`, rewritten on each auth change.
const AUTH: &str = "auth";
/// Present while records a compaction dropped are still in the file (deleted a batch at a
/// time by [`StateStore::reclaim`]), so that a restart finds them again. Not exported: a
/// snapshot leaves them out.
const RECLAIM_PENDING: &str = "reclaim_pending";
/// The meta keys the state itself owns; callers' extra meta must use others.
const STATE_KEYS: &[&str] = &[APPLIED_INDEX, REVISION, COMPACT_REVISION, ALARMS, AUTH, RECLAIM_PENDING];
/// Leases live in the meta table as `lease/<id in hex>`, so snapshots carry them as they
/// carry every meta value.
const LEASE_PREFIX: &str = "lease/";
/// Counter sessions live in the meta table under this prefix, by lease id.
const SESSION_PREFIX: &str = "counter-session/";

fn session_key(lease: i64) -> String {
    format!("{SESSION_PREFIX}{:016x}", lease as u64)
}

fn lease_key(id: i64) -> String {
    format!("{LEASE_PREFIX}{:016x}", id as u64)
}

/// Told of every change to the state, in order, while applies wait: the watch hub
/// follows the store through it.
pub trait ApplyObserver: Send + Sync {
    /// Whether the next apply should hand over the records it writes (a copy of each):
    /// only while someone watches, so that writes nobody watches copy nothing.
    fn wants_changes(&self) -> bool;
    /// A batch of entries was applied: `changes` are the records it wrote, in revision
    /// order, or `None` if they were not asked for; `revision` is the store's revision now.
    fn applied(&self, revision: i64, changes: Option<Vec<(Rev, StoredKv)>>);
    /// The whole state was replaced (a snapshot was installed); it is now at `revision`.
    fn replaced(&self, revision: i64);
}

/// Records one [`StateStore::history`] call reads at most (finishing the revision it is
/// in), so that a watch of rare keys catches up in steps rather than one long scan.
const HISTORY_SCAN_MAX: usize = 100_000;

/// Point reads [`StateStore::values_at`] makes per hold of the index lock.
const VALUES_AT_CHUNK: usize = 256;

/// What [`StateStore::history`] found from a revision on.
#[derive(Debug)]
pub enum History {
    /// The revision asked for is compacted; the oldest revision kept is this one.
    Compacted(i64),
    /// The records of revisions `from..=through` whose keys were asked for.
    Changes { changes: Vec<(Rev, StoredKv)>, through: i64 },
}

/// The values of the meta keys an export was asked for, in the order asked (None: absent).
pub type MetaValues = Vec<Option<Vec<u8>>>;

/// What an export or import moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportSummary {
    pub records: u64,
    pub meta: u64,
}

/// One consistent read of a group's whole state, taken by [`StateStore::view`]: what a
/// member sends another that is too far behind for the log. It shows the state as of the
/// moment it was taken however long it is kept.
pub struct StateView {
    txn: Reading,
    unreclaimed: synod_mvcc::Unreclaimed,
    kv_table: String,
    meta_table: String,
    path: PathBuf,
    size_bytes: u64,
}

impl std::fmt::Debug for StateView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateView").field("path", &self.path).finish_non_exhaustive()
    }
}

impl StateView {
    /// A metadata value as of this view (see [`StateStore::meta_value`]).
    pub fn meta_value(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let meta =
            self.txn.open_table(TableDefinition::<&str, &[u8]>::new(&self.meta_table)).map_err(engine)?;
        read_meta(&meta, key)
    }

    /// The state file's size when the view was taken: an upper bound of what an export
    /// writes, give or take the framing.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Writes the state this view shows (records and meta) to `out` in synod's snapshot
    /// stream format: a magic line, then checksummed frames. Records a compaction dropped
    /// that are not deleted yet are left out, as is the marker that counts them.
    pub fn export(&self, out: &mut dyn Write) -> Result<ExportSummary, StorageError> {
        let io = |source| StorageError::Io { path: self.path.clone(), source };
        out.write_all(SNAPSHOT_MAGIC).map_err(io)?;
        let mut summary = ExportSummary::default();
        let table =
            self.txn.open_table(TableDefinition::<KvKey, &[u8]>::new(&self.kv_table)).map_err(engine)?;
        let mut payload = Vec::new();
        for item in table.range::<KvKey>(..).map_err(engine)? {
            let (key, value) = item.map_err(engine)?;
            let (main, sub) = key.value();
            if self.unreclaimed.contains(Rev::new(main as i64, sub as i64)) {
                continue;
            }
            payload.clear();
            payload.extend_from_slice(&main.to_be_bytes());
            payload.extend_from_slice(&sub.to_be_bytes());
            payload.extend_from_slice(value.value());
            write_frame(out, FRAME_RECORD, &payload).map_err(io)?;
            summary.records += 1;
        }
        let meta =
            self.txn.open_table(TableDefinition::<&str, &[u8]>::new(&self.meta_table)).map_err(engine)?;
        for item in meta.range::<&str>(..).map_err(engine)? {
            let (key, value) = item.map_err(engine)?;
            if key.value() == RECLAIM_PENDING {
                continue;
            }
            let key = key.value().as_bytes();
            let key_len =
                u16::try_from(key.len()).map_err(|_| StorageError::corrupt("state meta", "key too long"))?;
            payload.clear();
            payload.extend_from_slice(&key_len.to_le_bytes());
            payload.extend_from_slice(key);
            payload.extend_from_slice(value.value());
            write_frame(out, FRAME_META, &payload).map_err(io)?;
            summary.meta += 1;
        }
        payload.clear();
        payload.extend_from_slice(&summary.records.to_le_bytes());
        payload.extend_from_slice(&summary.meta.to_le_bytes());
        write_frame(out, FRAME_END, &payload).map_err(io)?;
        Ok(summary)
    }
}

/// A redb read transaction with the database it reads, which stays open while the
/// transaction lives even if [`StateStore::defragment`] has replaced it meanwhile.
struct Reading {
    txn: redb::ReadTransaction,
    _db: Arc<Database>,
}

impl std::ops::Deref for Reading {
    type Target = redb::ReadTransaction;
    fn deref(&self) -> &redb::ReadTransaction {
        &self.txn
    }
}

const SNAPSHOT_MAGIC: &[u8; 12] = b"SYNODSTATE1\n";
const FRAME_RECORD: u8 = 1;
const FRAME_META: u8 = 2;
const FRAME_END: u8 = 3;
/// A record frame's payload is the revision (main, sub; big-endian) and then the value.
const RECORD_VALUE_AT: usize = 16;
/// A frame holds one record or meta value, so one request's worth of data at most.
const FRAME_BYTES_MAX: usize = synod_base::limits::REQUEST_BYTES_MAX as usize + 64 * 1024;

/// One frame: kind, little-endian payload length, payload, CRC32 of kind and payload.
fn write_frame(out: &mut dyn Write, kind: u8, payload: &[u8]) -> std::io::Result<()> {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind]);
    hasher.update(payload);
    out.write_all(&[kind])?;
    out.write_all(&(payload.len() as u32).to_le_bytes())?;
    out.write_all(payload)?;
    out.write_all(&hasher.finalize().to_le_bytes())
}

fn read_frame(input: &mut dyn Read) -> Result<(u8, Vec<u8>), String> {
    let mut head = [0u8; 5];
    input.read_exact(&mut head).map_err(|e| format!("reading a frame header: {e}"))?;
    let len = u32::from_le_bytes(head[1..].try_into().expect("4 bytes")) as usize;
    if len > FRAME_BYTES_MAX {
        return Err(format!("a frame of {len} bytes"));
    }
    let mut payload = vec![0u8; len];
    input.read_exact(&mut payload).map_err(|e| format!("reading a frame: {e}"))?;
    let mut crc = [0u8; 4];
    input.read_exact(&mut crc).map_err(|e| format!("reading a frame checksum: {e}"))?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&head[..1]);
    hasher.update(&payload);
    if hasher.finalize() != u32::from_le_bytes(crc) {
        return Err("frame checksum mismatch".into());
    }
    Ok((head[0], payload))
}

/// Reads a snapshot stream to its end frame, checking every frame, record and meta value,
/// and hands each record (its revision, its frame's payload, which holds the stored value
/// after the revision, and the decoded value) and meta entry to the sinks.
fn walk_snapshot(
    input: &mut dyn Read,
    mut record: impl FnMut(Rev, Vec<u8>, StoredKv) -> Result<(), StorageError>,
    mut meta: impl FnMut(&str, &[u8]) -> Result<(), StorageError>,
) -> Result<ExportSummary, StorageError> {
    let corrupt = |detail: String| StorageError::corrupt("snapshot stream", detail);
    let mut magic = [0u8; SNAPSHOT_MAGIC.len()];
    input.read_exact(&mut magic).map_err(|e| corrupt(format!("reading the header: {e}")))?;
    if magic != *SNAPSHOT_MAGIC {
        return Err(corrupt("not a synod state snapshot".into()));
    }
    let mut summary = ExportSummary::default();
    loop {
        let (kind, payload) = read_frame(input).map_err(corrupt)?;
        match kind {
            FRAME_RECORD => {
                if payload.len() < RECORD_VALUE_AT {
                    return Err(corrupt("short record frame".into()));
                }
                let main = u64::from_be_bytes(payload[..8].try_into().expect("8 bytes"));
                let sub = u64::from_be_bytes(payload[8..RECORD_VALUE_AT].try_into().expect("8 bytes"));
                let rev = Rev::new(main as i64, sub as i64);
                if rev.main < 1 || rev.sub < 0 {
                    return Err(corrupt(format!("record at revision {rev}")));
                }
                // The value must be one synod wrote: checksummed and decodable.
                let stored = decode_kv(rev, &payload[RECORD_VALUE_AT..])?;
                record(rev, payload, stored)?;
                summary.records += 1;
            }
            FRAME_META => {
                let key_len = u16::from_le_bytes(
                    payload
                        .get(..2)
                        .ok_or_else(|| corrupt("short meta frame".into()))?
                        .try_into()
                        .expect("2 bytes"),
                ) as usize;
                let key = payload.get(2..2 + key_len).ok_or_else(|| corrupt("short meta frame".into()))?;
                let key = std::str::from_utf8(key).map_err(|_| corrupt("meta key is not UTF-8".into()))?;
                let value = &payload[2 + key_len..];
                record::open(value).map_err(|d| corrupt(format!("meta {key}: {d}")))?;
                meta(key, value)?;
                summary.meta += 1;
            }
            FRAME_END => {
                let counts = payload.get(..16).ok_or_else(|| corrupt("short end frame".into()))?;
                let records = u64::from_le_bytes(counts[..8].try_into().expect("8 bytes"));
                let metas = u64::from_le_bytes(counts[8..].try_into().expect("8 bytes"));
                if (records, metas) != (summary.records, summary.meta) {
                    return Err(corrupt(format!(
                        "the stream ends after {}/{} frames but says {records}/{metas}",
                        summary.records, summary.meta
                    )));
                }
                return Ok(summary);
            }
            other => return Err(corrupt(format!("unknown frame kind {other}"))),
        }
    }
}

/// Sizes of the state file, for Status and the space quota.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateStats {
    /// Bytes the file occupies on disk (etcd's `dbSize`).
    pub size_bytes: u64,
    /// Bytes of the records the store holds: every revision of every key not yet
    /// compacted away, with its key and framing, and the leases (etcd's `dbSizeInUse`).
    /// Counted as records are written and removed, not by walking the file's pages: redb
    /// does not keep a count of its pages in use, and walking them reads the whole file.
    /// It is below the bytes of redb's pages in use by their fill factor and the b-tree's
    /// branches.
    pub in_use_bytes: u64,
}

pub struct StateStore {
    group: GroupId,
    path: PathBuf,
    kv_table: String,
    meta_table: String,
    /// Swapped for a new file by [`StateStore::defragment`]; readers keep the one they began
    /// on (see [`Reading`]).
    db: RwLock<Arc<Database>>,
    /// Whether the database is the file at `path` (rather than a simulated disk).
    on_file: bool,
    /// Held by everything that writes records (applies, reclaims, restores, installs) and,
    /// for its whole length, by a defragment: it copies the file into a new one while reads
    /// go on against the old file and its index, so nothing may be written to the old file
    /// meanwhile. Reads never take it; it is taken before `kv`, which a replacement of the
    /// file holds only to swap file and index in. (A received state is built without it,
    /// from its stream: [`StateStore::prepare_import`].)
    writes: Mutex<()>,
    kv: RwLock<KvStore>,
    /// The last applied log index plus one; 0 while nothing has been applied (consensus
    /// logs may start at index 0).
    applied_plus_one: AtomicU64,
    /// The store's revision and whether auth is on, as of the last apply: read on every
    /// request, so they must not wait for the index's lock, which a defragment or an
    /// import holds for seconds.
    revision: AtomicI64,
    auth_enabled: AtomicBool,
    /// Likewise the compaction revision, how many compacted records await deletion, and
    /// whether a compaction's pass over the index is unfinished (the checkpointer asks
    /// every few milliseconds).
    compacted: AtomicI64,
    unreclaimed: AtomicU64,
    index_pass: AtomicBool,
    size_bytes: AtomicU64,
    /// See [`StateStats::in_use_bytes`]: counted when the records are loaded, then kept
    /// up to date by every apply.
    record_bytes: AtomicU64,
    /// Set when an apply failed part-way: the in-memory index no longer matches the file,
    /// so nothing more may be read or applied until the member restarts.
    broken: AtomicBool,
    observer: OnceLock<Arc<dyn ApplyObserver>>,
}

/// redb's page cache for the state: the hot records of a large keyspace. Reads beyond it
/// come from the kernel's page cache, which does not count against the member. Measured
/// with 200,000 keys of 256-byte values on 3 members: a member's resident set was 215 MiB
/// with a 64 MiB cache and 170 MiB with this one, for about 5-10% fewer serializable gets.
const STATE_CACHE_BYTES: usize = 16 << 20;

impl StateStore {
    /// Opens (or creates) the state file and rebuilds the key index from its records.
    pub fn open(path: &Path, group: GroupId) -> Result<StateStore, StorageError> {
        // A defragment or an import that a crash interrupted left its unfinished file.
        for unfinished in unfinished_files(path)? {
            match std::fs::remove_file(&unfinished) {
                Ok(()) => tracing::info!(path = %unfinished.display(), "removed an unfinished state file"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(StorageError::Io { path: unfinished, source }),
            }
        }
        StateStore::open_database(open_database(path, STATE_CACHE_BYTES)?, path, group, true)
    }

    /// Opens the state on a storage backend other than a file (a simulated disk in tests).
    /// Its size statistics read zero.
    pub fn open_on(
        backend: impl redb::StorageBackend,
        name: &str,
        group: GroupId,
    ) -> Result<StateStore, StorageError> {
        let db = database_builder(STATE_CACHE_BYTES)
            .create_with_backend(backend)
            .map_err(|e| StorageError::Engine(e.into()))?;
        StateStore::open_database(db, Path::new(name), group, false)
    }

    fn open_database(
        db: Database,
        path: &Path,
        group: GroupId,
        on_file: bool,
    ) -> Result<StateStore, StorageError> {
        let kv_table = format!("kv/{}", group.0);
        let meta_table = format!("meta/{}", group.0);
        let txn = db.begin_write().map_err(engine)?;
        {
            // Create the tables up front so that readers never meet a missing table.
            txn.open_table(TableDefinition::<KvKey, &[u8]>::new(&kv_table)).map_err(engine)?;
            txn.open_table(TableDefinition::<&str, &[u8]>::new(&meta_table)).map_err(engine)?;
        }
        txn.commit().map_err(engine)?;

        let Loaded { kv, applied, record_bytes } = load(&db, &kv_table, &meta_table)?;
        let (revision, auth_enabled) = (kv.current_revision(), kv.auth().enabled());
        let (compacted, unreclaimed) = (kv.compact_revision(), kv.unreclaimed().len() as u64);

        let store = StateStore {
            group,
            path: path.to_path_buf(),
            kv_table,
            meta_table,
            db: RwLock::new(Arc::new(db)),
            on_file,
            writes: Mutex::new(()),
            kv: RwLock::new(kv),
            applied_plus_one: AtomicU64::new(applied.map_or(0, |a| a + 1)),
            revision: AtomicI64::new(revision),
            auth_enabled: AtomicBool::new(auth_enabled),
            compacted: AtomicI64::new(compacted),
            unreclaimed: AtomicU64::new(unreclaimed),
            index_pass: AtomicBool::new(false),
            size_bytes: AtomicU64::new(0),
            record_bytes: AtomicU64::new(record_bytes),
            broken: AtomicBool::new(false),
            observer: OnceLock::new(),
        };
        store.refresh_size()?;
        tracing::info!(
            group = group.0,
            applied_index = ?applied,
            revision = store.kv_read()?.current_revision(),
            keys = store.kv_read()?.key_count(),
            "opened state"
        );
        Ok(store)
    }

    pub fn group(&self) -> GroupId {
        self.group
    }

    /// Sets the one observer of applies; it first hears of the revision the store is at.
    /// Fails if one is set already.
    pub fn set_observer(&self, observer: Arc<dyn ApplyObserver>) -> Result<(), StorageError> {
        let kv = self.kv_read()?;
        observer.replaced(kv.current_revision());
        self.observer.set(observer).map_err(|_| StorageError::corrupt("state", "a second apply observer"))?;
        drop(kv);
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The index of the last applied log entry (durable or not); 0 when nothing is applied.
    pub fn applied_index(&self) -> LogIndex {
        self.applied().unwrap_or_default()
    }

    /// The index of the last applied log entry, if any.
    pub fn applied(&self) -> Option<LogIndex> {
        self.applied_plus_one.load(Ordering::Acquire).checked_sub(1).map(LogIndex)
    }

    /// The newest applied revision. Never waits for the index's lock.
    pub fn current_revision(&self) -> Result<i64, StorageError> {
        self.check_usable()?;
        Ok(self.revision.load(Ordering::Acquire))
    }

    /// Whether auth is on, as of the newest applied state. Never waits for the index's lock.
    pub fn auth_enabled(&self) -> Result<bool, StorageError> {
        self.check_usable()?;
        Ok(self.auth_enabled.load(Ordering::Acquire))
    }

    /// Publishes what [`StateStore::current_revision`], [`StateStore::auth_enabled`],
    /// [`StateStore::compact_revision`], [`StateStore::unreclaimed`] and
    /// [`StateStore::compacting`] read; called with the
    /// index's write lock held, after each change of the state.
    fn publish(&self, kv: &KvStore) {
        self.revision.store(kv.current_revision(), Ordering::Release);
        self.auth_enabled.store(kv.auth().enabled(), Ordering::Release);
        self.compacted.store(kv.compact_revision(), Ordering::Release);
        self.unreclaimed.store(kv.unreclaimed().len() as u64, Ordering::Release);
        self.index_pass.store(kv.index_pass_pending(), Ordering::Release);
    }

    /// The compaction revision. Never waits for the index's lock.
    pub fn compact_revision(&self) -> Result<i64, StorageError> {
        self.check_usable()?;
        Ok(self.compacted.load(Ordering::Acquire))
    }

    pub fn alarms(&self) -> Result<Vec<AlarmMember>, StorageError> {
        Ok(self.kv_read()?.alarms())
    }

    pub fn stats(&self) -> StateStats {
        StateStats {
            size_bytes: self.size_bytes.load(Ordering::Relaxed),
            in_use_bytes: self.record_bytes.load(Ordering::Relaxed),
        }
    }

    fn check_usable(&self) -> Result<(), StorageError> {
        if self.broken.load(Ordering::Acquire) {
            return Err(StorageError::corrupt(
                "state",
                "an earlier apply failed part-way; restart the member to rebuild its state",
            ));
        }
        Ok(())
    }

    /// The key index, unless a failure left it unusable. A poisoned lock means a panic
    /// while it was held: the index may be half-updated, so it counts as broken too.
    fn kv_read(&self) -> Result<RwLockReadGuard<'_, KvStore>, StorageError> {
        self.check_usable()?;
        self.kv.read().map_err(|_| self.poisoned())
    }

    fn kv_write(&self) -> Result<RwLockWriteGuard<'_, KvStore>, StorageError> {
        self.check_usable()?;
        self.kv.write().map_err(|_| self.poisoned())
    }

    /// The key index with no compaction pass under way, for readers of the file's records
    /// that skip what compactions dropped (exports, HashKV): a pass under way is finished
    /// first, with the index's write lock.
    fn kv_read_exact(&self) -> Result<RwLockReadGuard<'_, KvStore>, StorageError> {
        loop {
            let kv = self.kv_read()?;
            if !kv.index_pass_pending() {
                return Ok(kv);
            }
            drop(kv);
            let mut kv = self.kv_write()?;
            kv.finish_index_pass();
            self.publish(&kv);
        }
    }

    /// The right to write records (see `writes`).
    fn writes_lock(&self) -> Result<MutexGuard<'_, ()>, StorageError> {
        self.check_usable()?;
        self.writes.lock().map_err(|_| self.poisoned())
    }

    fn poisoned(&self) -> StorageError {
        self.broken.store(true, Ordering::Release);
        StorageError::corrupt(
            "state",
            "a thread panicked while changing it; restart the member to rebuild it",
        )
    }

    /// The database, for a write transaction (held while it runs).
    fn db_read(&self) -> Arc<Database> {
        self.db.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// A write transaction on the current file; a member that cannot start one stops.
    /// Waits while another is open (a checkpoint's commit holds one through its fsync).
    fn begin_write(&self) -> Result<redb::WriteTransaction, StorageError> {
        self.db_read().begin_write().map_err(|e| {
            self.broken.store(true, Ordering::Release);
            engine(e)
        })
    }

    /// A read transaction, with the database it reads.
    fn begin_read(&self) -> Result<Reading, StorageError> {
        let db = self.db_read();
        Ok(Reading { txn: db.begin_read().map_err(engine)?, _db: db })
    }

    /// Applies a batch of committed log entries in order (`None` for entries that carry no
    /// command) and returns each command's outcome. Not durable until the next checkpoint.
    ///
    /// An error leaves the store unusable: the caller must stop the member.
    ///
    /// `extra_meta` is written in the same transaction: the consensus layer keeps its
    /// applied log id and membership there, so they roll back together with the records.
    pub fn apply(
        &self,
        entries: &[(LogIndex, Option<&Command>)],
        extra_meta: &[(&str, &[u8])],
    ) -> Result<Vec<Option<Applied>>, StorageError> {
        let Some(&(last, _)) = entries.last() else {
            return Ok(Vec::new());
        };
        let _writes = self.writes_lock()?;
        // The write transaction before the index's lock: it waits for a checkpoint's
        // commit (an fsync), which must not hold up the reads that take that lock.
        let txn = self.begin_write()?;
        let mut kv = self.kv_write()?;
        let applied = self.applied();
        assert!(
            applied.is_none_or(|applied| entries[0].0 > applied),
            "apply of entry {} at applied index {applied:?}",
            entries[0].0
        );
        // A panic inside the state machine is a bug, but it must stop this member cleanly,
        // not kill one thread and leave the others serving a half-applied state.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.apply_locked(&mut kv, txn, entries, last, extra_meta)
        }))
        .unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(StorageError::corrupt(
                format!("applying log entries {}..={}", entries[0].0, last),
                format!("the state machine panicked: {message}"),
            ))
        });
        if result.is_err() {
            self.broken.store(true, Ordering::Release);
        } else {
            self.applied_plus_one.store(last.0 + 1, Ordering::Release);
        }
        result
    }

    fn apply_locked(
        &self,
        kv: &mut KvStore,
        mut txn: redb::WriteTransaction,
        entries: &[(LogIndex, Option<&Command>)],
        last: LogIndex,
        extra_meta: &[(&str, &[u8])],
    ) -> Result<Vec<Option<Applied>>, StorageError> {
        txn.set_durability(Durability::None).map_err(engine)?;
        let mut outcomes = Vec::with_capacity(entries.len());
        let observer = self.observer.get();
        let capture = observer.is_some_and(|o| o.wants_changes());
        let mut changes = Vec::new();
        let record_bytes;
        {
            let mut table =
                txn.open_table(TableDefinition::<KvKey, &[u8]>::new(&self.kv_table)).map_err(engine)?;
            let mut meta =
                txn.open_table(TableDefinition::<&str, &[u8]>::new(&self.meta_table)).map_err(engine)?;
            let mut writer = TableWriter {
                table: &mut table,
                meta: &mut meta,
                changes: capture.then_some(&mut changes),
                record_bytes: RecordBytes::default(),
            };
            for (_, command) in entries {
                let outcome = match command {
                    Some(command) => Some(kv.apply(&mut writer, command)?),
                    None => None,
                };
                outcomes.push(outcome);
            }
            record_bytes = writer.record_bytes;
            write_meta(&mut meta, kv, last, extra_meta)?;
        }
        txn.commit().map_err(engine)?;
        record_bytes.apply_to(&self.record_bytes);
        // Before the watchers hear of it: a client that saw an event must not then get a
        // header with an older revision.
        self.publish(kv);
        if let Some(observer) = observer {
            observer.applied(kv.current_revision(), capture.then_some(changes));
        }
        Ok(outcomes)
    }

    /// How many counter sessions the state holds (each keeps its results until acknowledged).
    pub fn counter_session_count(&self) -> Result<usize, StorageError> {
        Ok(self.kv_read()?.counter_sessions().len())
    }

    /// Changes whenever a lease is granted or removed.
    pub fn lease_generation(&self) -> Result<u64, StorageError> {
        Ok(self.kv_read()?.leases().generation())
    }

    /// Reads the auth state (users, roles, tokens) as of the newest apply.
    pub fn auth<T>(&self, read: impl FnOnce(&synod_mvcc::auth::Auth) -> T) -> Result<T, StorageError> {
        Ok(read(self.kv_read()?.auth()))
    }

    /// The stored leases, in id order.
    pub fn leases(&self) -> Result<Vec<LeaseRecord>, StorageError> {
        Ok(self.kv_read()?.leases().records().copied().collect())
    }

    /// One lease and the keys attached to it.
    pub fn lease(&self, id: i64) -> Result<Option<synod_mvcc::Lease>, StorageError> {
        Ok(self.kv_read()?.leases().get(id).cloned())
    }

    /// The records written at revisions `from` and later whose keys `keep` accepts, read
    /// from one consistent view: at least one whole revision, then whole revisions until
    /// they hold about `bytes_max` bytes (or [`HISTORY_SCAN_MAX`] records were read). A
    /// watch catches up from here.
    pub fn history(
        &self,
        from: i64,
        keep: &dyn Fn(&[u8]) -> bool,
        bytes_max: usize,
    ) -> Result<History, StorageError> {
        let (txn, current, compacted, unreclaimed) = {
            // A history from the compaction revision itself reads records a compaction
            // may drop (a deletion at that revision), so it needs the pass finished; one
            // from before it is refused below, and one from after it reads none.
            let kv = match self.kv_read()? {
                kv if kv.index_pass_pending() && from == kv.compact_revision() => {
                    drop(kv);
                    self.kv_read_exact()?
                }
                kv => kv,
            };
            let txn = self.begin_read()?;
            (txn, kv.current_revision(), kv.compact_revision(), kv.unreclaimed().clone())
        };
        if from < compacted {
            return Ok(History::Compacted(compacted));
        }
        let from = from.max(1);
        let table = txn.open_table(TableDefinition::<KvKey, &[u8]>::new(&self.kv_table)).map_err(engine)?;
        let mut changes = Vec::new();
        let mut bytes = 0;
        let mut through = current;
        let revisions = (from as u64, 0)..=(current.max(0) as u64, u64::MAX);
        for (scanned, item) in table.range::<KvKey>(revisions).map_err(engine)?.enumerate() {
            let (key, value) = item.map_err(engine)?;
            let (main, sub) = key.value();
            let rev = Rev::new(main as i64, sub as i64);
            if (bytes >= bytes_max || scanned >= HISTORY_SCAN_MAX) && sub == 0 {
                through = rev.main - 1;
                break;
            }
            if rev.main <= compacted && unreclaimed.contains(rev) {
                continue;
            }
            let stored = decode_kv(rev, value.value())?;
            if keep(&stored.kv.key) {
                bytes += stored.kv.key.len() + stored.kv.value.len() + 32;
                changes.push((rev, stored));
            }
        }
        Ok(History::Changes { changes, through })
    }

    /// The key-values the keys had at the given revisions, where they existed then and the
    /// revision is not compacted: the previous values of watch events.
    pub fn values_at(&self, lookups: &[(&[u8], i64)]) -> Result<Vec<Option<KeyValue>>, StorageError> {
        let mut values = Vec::with_capacity(lookups.len());
        // A few at a time under the index lock, so that applies wait only briefly; a value
        // at a past revision stays what it was, or is compacted away.
        for chunk in lookups.chunks(VALUES_AT_CHUNK) {
            let kv = self.kv_read()?;
            let txn = self.begin_read()?;
            let table =
                txn.open_table(TableDefinition::<KvKey, &[u8]>::new(&self.kv_table)).map_err(engine)?;
            let reader = TableReader { table: &table };
            for (key, at) in chunk {
                values.push(kv.kv_at(&reader, key, *at)?);
            }
        }
        Ok(values)
    }
}

/// Writes the state's own meta and the caller's extra meta in an apply transaction.
fn write_meta(
    meta: &mut Table<'_, &'static str, &'static [u8]>,
    kv: &KvStore,
    applied: LogIndex,
    extra: &[(&str, &[u8])],
) -> Result<(), StorageError> {
    let m = kv.meta();
    let mut put =
        |key: &str, value: &[u8]| meta.insert(key, record::seal(value).as_slice()).map(drop).map_err(engine);
    put(APPLIED_INDEX, &applied.0.to_le_bytes())?;
    put(REVISION, &(m.current_revision as u64).to_le_bytes())?;
    put(COMPACT_REVISION, &(m.compact_revision as u64).to_le_bytes())?;
    put(ALARMS, &encode_alarms(&m.alarms))?;
    for (key, value) in extra {
        assert!(
            !STATE_KEYS.contains(key) && !key.starts_with(LEASE_PREFIX) && !key.starts_with(SESSION_PREFIX),
            "extra meta key {key} is the state's own"
        );
        put(key, value)?;
    }
    write_reclaim_marker(meta, kv)?;
    Ok(())
}

/// Sets or clears [`RECLAIM_PENDING`] to match the store. A pass over the index that ends
/// outside an apply with nothing dropped leaves the marker to the next apply; a restart
/// meanwhile compacts its rebuilt index for nothing, which is harmless.
fn write_reclaim_marker(
    meta: &mut Table<'_, &'static str, &'static [u8]>,
    kv: &KvStore,
) -> Result<(), StorageError> {
    if kv.unreclaimed().is_empty() && !kv.index_pass_pending() {
        meta.remove(RECLAIM_PENDING).map_err(engine)?;
    } else {
        let compacted = (kv.compact_revision() as u64).to_le_bytes();
        meta.insert(RECLAIM_PENDING, record::seal(&compacted).as_slice()).map_err(engine)?;
    }
    Ok(())
}

impl StateStore {
    /// A metadata value written by [`StateStore::apply`]'s `extra_meta`, as of the newest
    /// applied state.
    pub fn meta_value(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        // Not through a view: that would finish a compaction's pass over the index, which
        // meta does not need (peers ask for the membership every few seconds).
        self.check_usable()?;
        let txn = self.begin_read()?;
        let meta = txn.open_table(TableDefinition::<&str, &[u8]>::new(&self.meta_table)).map_err(engine)?;
        read_meta(&meta, key)
    }

    /// Makes everything applied so far durable (two fsyncs) and returns the applied index
    /// that is now on disk. The log may be purged up to this index, never beyond.
    pub fn checkpoint(&self) -> Result<LogIndex, StorageError> {
        self.check_usable()?;
        let durable = {
            let db = self.db_read();
            let mut txn = db.begin_write().map_err(engine)?;
            txn.set_quick_repair(true);
            let durable = {
                let meta =
                    txn.open_table(TableDefinition::<&str, &[u8]>::new(&self.meta_table)).map_err(engine)?;
                match meta.get(APPLIED_INDEX).map_err(engine)? {
                    Some(v) => decode_u64(
                        APPLIED_INDEX,
                        record::open(v.value())
                            .map_err(|d| StorageError::corrupt("state meta applied_index", d))?,
                    )?,
                    None => 0,
                }
            };
            txn.commit().map_err(engine)?;
            durable
        };
        self.refresh_size()?;
        Ok(LogIndex(durable))
    }

    /// Measures the file's size (quotas use it).
    fn refresh_size(&self) -> Result<(), StorageError> {
        let size = match std::fs::metadata(&self.path) {
            Ok(metadata) => metadata.len(),
            // A store on a simulated disk has no file.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(source) => return Err(StorageError::Io { path: self.path.clone(), source }),
        };
        self.size_bytes.store(size, Ordering::Relaxed);
        Ok(())
    }

    /// A Range at the newest applied revision.
    pub fn range(&self, request: &RangeRequest) -> Result<Result<RangeResponse, EtcdError>, StorageError> {
        let (plan, txn) = {
            let kv = self.kv_read()?;
            let plan = match kv.plan_range(request) {
                Ok(plan) => plan,
                Err(e) => return Ok(Err(e)),
            };
            let txn = self.begin_read()?;
            (plan, txn)
        };
        let table = txn.open_table(TableDefinition::<KvKey, &[u8]>::new(&self.kv_table)).map_err(engine)?;
        Ok(Ok(plan.execute(&TableReader { table: &table })?))
    }

    /// A Txn without writes, served from the newest applied state.
    pub fn read_txn(&self, request: &TxnRequest) -> Result<Result<TxnResponse, EtcdError>, StorageError> {
        let kv = self.kv_read()?;
        let txn = self.begin_read()?;
        let table = txn.open_table(TableDefinition::<KvKey, &[u8]>::new(&self.kv_table)).map_err(engine)?;
        Ok(kv.read_txn(&TableReader { table: &table }, request)?)
    }

    /// Records compactions dropped that the file still holds, as far as the newest
    /// compaction's pass over the index has found them. An error once the state is
    /// unusable, so that nobody waits for a deletion that will not happen.
    pub fn unreclaimed(&self) -> Result<usize, StorageError> {
        self.check_usable()?;
        Ok(self.unreclaimed.load(Ordering::Acquire) as usize)
    }

    /// Whether a compaction still has work left: its pass over the index, or records to
    /// delete ([`StateStore::reclaim`] does both). An error once the state is unusable.
    pub fn compacting(&self) -> Result<bool, StorageError> {
        Ok(self.unreclaimed()? > 0 || self.index_pass.load(Ordering::Acquire))
    }

    /// Takes the next step of a compaction's work and returns how many records are known
    /// to be left to delete, at least 1 while its pass over the index is unfinished. The
    /// step is the next `COMPACTION_PASS_KEYS` keys of that pass while there are any; then
    /// it deletes up to `max` records, in one transaction that holds applies off only for
    /// its own length, durable with the next checkpoint (a crash before it finds them again
    /// on restart). Call it while [`StateStore::compacting`] says so.
    pub fn reclaim(&self, max: usize) -> Result<usize, StorageError> {
        if self.index_pass.load(Ordering::Acquire) {
            return self.index_pass_step(&mut *self.kv_write()?);
        }
        let _writes = self.writes_lock()?;
        if self.unreclaimed()? == 0 {
            return Ok(0);
        }
        // Before the index's lock, as an apply does.
        let txn = self.begin_write()?;
        let mut kv = self.kv_write()?;
        // A compaction applied while this step waited for the locks: its pass comes first,
        // a slice at a time (the deletion would finish it at once).
        if kv.index_pass_pending() {
            return self.index_pass_step(&mut kv);
        }
        let result = self.reclaim_locked(&mut kv, txn, max);
        if result.is_err() {
            // The in-memory list may have moved past records the file still holds.
            self.broken.store(true, Ordering::Release);
        }
        self.publish(&kv);
        result
    }

    /// One slice of a compaction's pass over the index; see [`StateStore::reclaim`].
    fn index_pass_step(&self, kv: &mut KvStore) -> Result<usize, StorageError> {
        let pending = kv.compact_index(synod_base::limits::COMPACTION_PASS_KEYS);
        self.publish(kv);
        Ok(kv.unreclaimed().len().max(usize::from(pending)))
    }

    /// Whether a compaction's pass over the index is unfinished ([`StateStore::reclaim`]
    /// then steps through it, and deletes nothing).
    pub fn index_pass_pending(&self) -> Result<bool, StorageError> {
        self.check_usable()?;
        Ok(self.index_pass.load(Ordering::Acquire))
    }

    fn reclaim_locked(
        &self,
        kv: &mut KvStore,
        mut txn: redb::WriteTransaction,
        max: usize,
    ) -> Result<usize, StorageError> {
        txn.set_durability(Durability::None).map_err(engine)?;
        let (left, record_bytes) = {
            let mut table =
                txn.open_table(TableDefinition::<KvKey, &[u8]>::new(&self.kv_table)).map_err(engine)?;
            let mut meta =
                txn.open_table(TableDefinition::<&str, &[u8]>::new(&self.meta_table)).map_err(engine)?;
            let mut writer = TableWriter {
                table: &mut table,
                meta: &mut meta,
                changes: None,
                record_bytes: RecordBytes::default(),
            };
            let left = kv.reclaim(&mut writer, max)?;
            let record_bytes = writer.record_bytes;
            write_reclaim_marker(&mut meta, kv)?;
            (left, record_bytes)
        };
        txn.commit().map_err(engine)?;
        record_bytes.apply_to(&self.record_bytes);
        Ok(left)
    }

    /// Rewrites the file to release the space that deleted and compacted records left
    /// behind (etcd's defragment). Applies wait while it runs, as etcd's do; reads do not.
    ///
    /// As etcd does, it copies the records into a new file (`state.redb.new`, made
    /// durable, then renamed over the old one) rather than moving pages within the file,
    /// which on a file of gigabytes takes several times as long. Reads go on against the
    /// old file meanwhile, and those under way when it is swapped out finish on it.
    pub fn defragment(&self, timeout: Duration) -> Result<(), StorageError> {
        let writes = self.writes_lock()?;
        if self.on_file {
            let (fresh, ()) = self.build_replacement(&replacement_path(&self.path), |fresh| {
                let old = self.begin_read()?;
                copy_table(
                    &old,
                    fresh,
                    TableDefinition::<KvKey, &[u8]>::new(&self.kv_table),
                    COPY_BATCH_RECORDS,
                )?;
                copy_table(&old, fresh, TableDefinition::<&str, &[u8]>::new(&self.meta_table), usize::MAX)
            })?;
            // The records did not change: the index stays as it is.
            let kv = self.kv_write()?;
            let old = self.swap_in(fresh)?;
            drop(kv);
            self.sync_dir()?;
            drop(old);
        } else {
            let kv = self.kv_write()?;
            self.defragment_in_place(timeout)?;
            drop(kv);
        }
        drop(writes);
        self.refresh_size()
    }

    /// Builds a new state file at `fresh_path` with `fill` (given an empty database there)
    /// and makes it durable; [`StateStore::swap_in`] then puts it in place. If `fill`
    /// fails, the new file is deleted.
    fn build_replacement<T>(
        &self,
        fresh_path: &Path,
        fill: impl FnOnce(&Database) -> Result<T, StorageError>,
    ) -> Result<(PreparedFile, T), StorageError> {
        match std::fs::remove_file(fresh_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(StorageError::Io { path: fresh_path.to_path_buf(), source: e });
            }
            _ => {}
        }
        let file =
            PreparedFile { db: Some(open_database(fresh_path, STATE_CACHE_BYTES)?), path: fresh_path.into() };
        let fresh = file.database();
        let value = fill(fresh)?;
        let mut txn = fresh.begin_write().map_err(engine)?;
        txn.set_quick_repair(true);
        // Both tables exist in a state file, even when the stream held no records.
        txn.open_table(TableDefinition::<KvKey, &[u8]>::new(&self.kv_table)).map_err(engine)?;
        txn.open_table(TableDefinition::<&str, &[u8]>::new(&self.meta_table)).map_err(engine)?;
        txn.commit().map_err(engine)?;
        Ok((file, value))
    }

    /// Renames a file [`StateStore::build_replacement`] made over the state file and swaps
    /// it in. Reads begun on the old file finish on it; it closes with the last of them.
    /// The caller holds the index's write lock, so that no read pairs the new file with
    /// the old index or the other way round, and then [`StateStore::sync_dir`] while it
    /// still holds `writes`. Returns the database it replaced, for the caller to let go of
    /// once it has released the locks: closing a database writes to it.
    fn swap_in(&self, mut fresh: PreparedFile) -> Result<Arc<Database>, StorageError> {
        std::fs::rename(&fresh.path, &self.path)
            .map_err(|source| StorageError::Io { path: fresh.path.clone(), source })?;
        // The rename is the commit point: from here on every write must reach the new file,
        // which is the only one with the state's name.
        let db = fresh.db.take().expect("a prepared file has its database");
        Ok(std::mem::replace(
            &mut *self.db.write().unwrap_or_else(|poisoned| poisoned.into_inner()),
            Arc::new(db),
        ))
    }

    /// Makes a rename over the state file durable. Unsynced, a crash could bring the old
    /// file back under the name while later checkpoints went to the new one: a member whose
    /// sync fails stops rather than serve on that. Called with `writes` held, so nothing is
    /// applied to the new file before its name is durable.
    fn sync_dir(&self) -> Result<(), StorageError> {
        let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) else {
            return Ok(());
        };
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|source| {
            self.broken.store(true, Ordering::Release);
            StorageError::Io { path: dir.to_path_buf(), source }
        })
    }

    /// redb's own compaction, for a database that is not a file of its own.
    fn defragment_in_place(&self, timeout: Duration) -> Result<(), StorageError> {
        let mut db = self.db.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let deadline = Instant::now() + timeout;
        loop {
            // Reads that planned before the index lock was taken may still be reading;
            // they finish without it, so wait for them.
            let Some(db) = Arc::get_mut(&mut db) else {
                if Instant::now() >= deadline {
                    return Err(engine(redb::CompactionError::TransactionInProgress));
                }
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            match db.compact() {
                Ok(true) => continue,
                Ok(false) => return Ok(()),
                Err(redb::CompactionError::TransactionInProgress) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(engine(e)),
            }
        }
    }

    /// One consistent read of the whole state, to export later ([`StateView::export`]).
    /// Cheap to take; while it lives the file keeps the pages it shows, so a view held
    /// through a long transfer lets the file grow by what is written meanwhile.
    pub fn view(&self) -> Result<StateView, StorageError> {
        self.check_usable()?;
        let kv = self.kv_read_exact()?;
        let txn = self.begin_read()?;
        Ok(StateView {
            txn,
            unreclaimed: kv.unreclaimed().clone(),
            kv_table: self.kv_table.clone(),
            meta_table: self.meta_table.clone(),
            path: self.path.clone(),
            size_bytes: self.size_bytes.load(Ordering::Relaxed),
        })
    }

    /// Writes the whole state of this group, from one consistent read, to `out` (see
    /// [`StateView::export`]), and returns the values of `meta_keys` as of that read.
    pub fn export(
        &self,
        out: &mut dyn Write,
        meta_keys: &[&str],
    ) -> Result<(ExportSummary, MetaValues), StorageError> {
        let view = self.view()?;
        let summary = view.export(out)?;
        let values = meta_keys.iter().map(|key| view.meta_value(key)).collect::<Result<_, _>>()?;
        Ok((summary, values))
    }

    /// Replaces the whole state of this group with a stream [`StateStore::export`] wrote,
    /// durably: [`StateStore::prepare_import`], then [`StateStore::install`]. If anything
    /// is wrong with the stream the state is left as it was.
    pub fn import(&self, input: &mut dyn Read) -> Result<ExportSummary, StorageError> {
        let (prepared, summary) = self.prepare_import(input)?;
        self.install(prepared)?;
        Ok(summary)
    }

    /// Builds the state a stream [`StateStore::export`] wrote beside this one, which goes
    /// on serving reads and applies meanwhile, and checks every frame of the stream as it
    /// reads it: a damaged or cut stream is an error and leaves nothing behind. A member
    /// receiving a snapshot runs this as the stream arrives; [`StateStore::install`] then
    /// puts the result in place. Several may be under way at once (a leader that retried).
    pub fn prepare_import(
        &self,
        input: &mut dyn Read,
    ) -> Result<(PreparedState, ExportSummary), StorageError> {
        self.check_usable()?;
        if !self.on_file {
            // A simulated store is small: the stream is checked now and imported in place
            // when installed.
            let mut stream = Vec::new();
            input
                .read_to_end(&mut stream)
                .map_err(|source| StorageError::Io { path: self.path.clone(), source })?;
            let summary = StateStore::check_snapshot(&mut stream.as_slice())?;
            return Ok((PreparedState(Prepared::Stream(stream)), summary));
        }
        let path = incoming_path(&self.path);
        let started = Instant::now();
        let (file, (summary, loaded)) =
            self.build_replacement(&path, |fresh| self.import_batched(fresh, input))?;
        tracing::info!(
            records = summary.records,
            secs = started.elapsed().as_secs_f64(),
            "prepared a received state"
        );
        Ok((PreparedState(Prepared::File { file, loaded: Box::new(loaded) }), summary))
    }

    /// Puts a state [`StateStore::prepare_import`] built in place of this one, durably.
    /// Applies wait for it; reads see the old state until it is in.
    pub fn install(&self, prepared: PreparedState) -> Result<(), StorageError> {
        let writes = self.writes_lock()?;
        match prepared.0 {
            Prepared::File { file, loaded } => {
                let behind = loaded.applied.map(LogIndex) < self.applied();
                if behind {
                    return Err(StorageError::corrupt(
                        "received state",
                        format!(
                            "applied index {:?} is behind this member's {:?}",
                            loaded.applied,
                            self.applied()
                        ),
                    ));
                }
                let mut kv = self.kv_write()?;
                let old_db = self.swap_in(file)?;
                let old_kv = self.take_loaded(&mut kv, *loaded);
                drop(kv);
                self.sync_dir()?;
                // The old file and index go without holding anything up.
                drop((old_db, old_kv));
            }
            Prepared::Stream(stream) => {
                let mut kv = self.kv_write()?;
                let db = self.db_read();
                let mut txn = db.begin_write().map_err(engine)?;
                txn.set_quick_repair(true);
                self.import_into(&txn, &mut stream.as_slice())?;
                txn.commit().map_err(engine)?;
                let loaded = load(&db, &self.kv_table, &self.meta_table)
                    .inspect_err(|_| self.broken.store(true, Ordering::Release))?;
                self.take_loaded(&mut kv, loaded);
            }
        }
        drop(writes);
        self.refresh_size()
    }

    /// Makes `loaded` the store's index and published state, and returns the index it
    /// replaced.
    fn take_loaded(&self, kv: &mut KvStore, loaded: Loaded) -> KvStore {
        let old = std::mem::replace(kv, loaded.kv);
        self.publish(kv);
        self.record_bytes.store(loaded.record_bytes, Ordering::Relaxed);
        self.applied_plus_one.store(loaded.applied.map_or(0, |a| a + 1), Ordering::Release);
        if let Some(observer) = self.observer.get() {
            observer.replaced(kv.current_revision());
        }
        old
    }

    /// Fills the empty database `fresh` from a snapshot stream, a batch of records per
    /// transaction (see [`IMPORT_BATCH_RECORDS`]), so that a large state never sits in one
    /// transaction's dirty pages, and indexes the records as they come, so that the file is
    /// not read again. Nothing is durable until [`StateStore::build_replacement`] commits.
    fn import_batched(
        &self,
        fresh: &Database,
        input: &mut dyn Read,
    ) -> Result<(ExportSummary, Loaded), StorageError> {
        let records_table = TableDefinition::<KvKey, &[u8]>::new(&self.kv_table);
        let meta_table = TableDefinition::<&str, &[u8]>::new(&self.meta_table);
        // The records of a batch, as their frames hold them (revision, then value).
        let mut records: Vec<(KvKey, Vec<u8>)> = Vec::with_capacity(IMPORT_BATCH_RECORDS);
        let mut buffered = 0;
        let mut meta: Vec<(String, Vec<u8>)> = Vec::new();
        let mut check = MetaCheck::default();
        let mut restoring = Restoring::new();
        let mut record_bytes = 0u64;
        let write = |records: &mut Vec<(KvKey, Vec<u8>)>| -> Result<(), StorageError> {
            let mut txn = fresh.begin_write().map_err(engine)?;
            txn.set_durability(Durability::None).map_err(engine)?;
            {
                let mut table = txn.open_table(records_table).map_err(engine)?;
                for (key, payload) in records.drain(..) {
                    table.insert(key, &payload[RECORD_VALUE_AT..]).map_err(engine)?;
                }
            }
            txn.commit().map_err(engine)
        };
        let summary = walk_snapshot(
            input,
            |rev, payload, stored| {
                restoring.record(rev, &stored)?;
                let value_bytes = payload.len() - RECORD_VALUE_AT;
                record_bytes += (KV_KEY_BYTES + value_bytes) as u64;
                records.push((table_key(rev), payload));
                buffered += value_bytes;
                if records.len() == IMPORT_BATCH_RECORDS || buffered >= IMPORT_BATCH_BYTES {
                    write(&mut records)?;
                    buffered = 0;
                }
                Ok(())
            },
            |key, value| {
                check.see(key, value)?;
                meta.push((key.to_string(), value.to_vec()));
                Ok(())
            },
        )?;
        check.finish()?;
        write(&mut records)?;
        let mut txn = fresh.begin_write().map_err(engine)?;
        txn.set_durability(Durability::None).map_err(engine)?;
        {
            let mut table = txn.open_table(meta_table).map_err(engine)?;
            for (key, value) in &meta {
                table.insert(key.as_str(), value.as_slice()).map_err(engine)?;
            }
        }
        txn.commit().map_err(engine)?;
        let txn = fresh.begin_read().map_err(engine)?;
        let meta = txn.open_table(meta_table).map_err(engine)?;
        let loaded = finish_load(&meta, read_file_meta(&meta)?, restoring, record_bytes)?;
        Ok((summary, loaded))
    }

    fn import_into(
        &self,
        txn: &redb::WriteTransaction,
        input: &mut dyn Read,
    ) -> Result<ExportSummary, StorageError> {
        let mut table =
            txn.open_table(TableDefinition::<KvKey, &[u8]>::new(&self.kv_table)).map_err(engine)?;
        let mut meta =
            txn.open_table(TableDefinition::<&str, &[u8]>::new(&self.meta_table)).map_err(engine)?;
        table.retain(|_, _| false).map_err(engine)?;
        meta.retain(|_, _| false).map_err(engine)?;
        let mut check = MetaCheck::default();
        let summary = walk_snapshot(
            input,
            |rev, payload, _| {
                table.insert(table_key(rev), &payload[RECORD_VALUE_AT..]).map(drop).map_err(engine)
            },
            |key, value| {
                check.see(key, value)?;
                meta.insert(key, value).map(drop).map_err(engine)
            },
        )?;
        // Refused before the commit, so the state stays as it was.
        check.finish()?;
        Ok(summary)
    }

    /// Writes the keyspace, from one consistent read, as an etcd snapshot (a bbolt
    /// database; see [`crate::etcd_snapshot`]) for Maintenance.Snapshot. Returns the
    /// revision it holds and the bytes written.
    pub fn write_etcd_snapshot(&self, out: &mut std::fs::File) -> Result<(i64, u64), StorageError> {
        let (txn, revision, compacted, leases, unreclaimed) = {
            let kv = self.kv_read_exact()?;
            let txn = self.begin_read()?;
            let leases: Vec<LeaseRecord> = kv.leases().records().copied().collect();
            (txn, kv.current_revision(), kv.compact_revision(), leases, kv.unreclaimed().clone())
        };
        let table = txn.open_table(TableDefinition::<KvKey, &[u8]>::new(&self.kv_table)).map_err(engine)?;
        let mut records = table
            .range::<KvKey>(..)
            .map_err(engine)?
            .map(|item| {
                let (key, value) = item.map_err(engine)?;
                let (main, sub) = key.value();
                Ok((Rev::new(main as i64, sub as i64), value))
            })
            // Records a compaction dropped that are not deleted yet are not in the snapshot.
            .filter(
                |item: &Result<_, StorageError>| !matches!(item, Ok((rev, _)) if unreclaimed.contains(*rev)),
            )
            .map(|item| {
                let (rev, value) = item?;
                Ok((rev, decode_kv(rev, value.value())?))
            });
        let bytes = crate::etcd_snapshot::write(out, &mut records, compacted, &leases)?;
        Ok((revision, bytes))
    }

    /// Fills an empty store with records read from a snapshot (synod's or etcd's), in
    /// revision order, with the store's revision, compaction revision and leases, but
    /// nothing of the cluster it came from, so that a new cluster can start on it
    /// (`synodctl snapshot restore`). Durable when it returns.
    pub fn restore_records(
        &self,
        records: &mut dyn Iterator<Item = Result<(Rev, StoredKv), StorageError>>,
        leases: &[LeaseRecord],
        revision: i64,
        compact_revision: i64,
    ) -> Result<ExportSummary, StorageError> {
        self.restore_with(|txn, table| {
            let mut summary = ExportSummary::default();
            for record in records {
                let (rev, stored) = record?;
                if rev.main < 1 || rev.sub < 0 || rev.main > revision {
                    return Err(StorageError::corrupt(
                        "restored records",
                        format!("a record at revision {rev} of {revision}"),
                    ));
                }
                table.insert(table_key(rev), encode_kv(&stored).as_slice()).map_err(engine)?;
                summary.records += 1;
            }
            let mut meta =
                txn.open_table(TableDefinition::<&str, &[u8]>::new(&self.meta_table)).map_err(engine)?;
            let mut put = |key: &str, value: &[u8]| {
                summary.meta += 1;
                meta.insert(key, record::seal(value).as_slice()).map(drop).map_err(engine)
            };
            put(REVISION, &(revision as u64).to_le_bytes())?;
            put(COMPACT_REVISION, &(compact_revision as u64).to_le_bytes())?;
            for lease in leases {
                put(&lease_key(lease.id), &lease.encode_to_vec())?;
            }
            Ok(summary)
        })
    }

    /// Runs `fill` on an empty store in one durable transaction, then rebuilds the key
    /// index from what it wrote (which checks that the records fit together).
    fn restore_with(
        &self,
        fill: impl FnOnce(&redb::WriteTransaction, &mut KvTable<'_>) -> Result<ExportSummary, StorageError>,
    ) -> Result<ExportSummary, StorageError> {
        let _writes = self.writes_lock()?;
        let mut kv = self.kv_write()?;
        if self.applied().is_some() || kv.current_revision() != 1 || !kv.leases().is_empty() {
            return Err(StorageError::corrupt("state", "a snapshot is restored only into an empty data dir"));
        }
        let summary = {
            let db = self.db_read();
            let mut txn = db.begin_write().map_err(engine)?;
            txn.set_durability(Durability::Immediate).map_err(engine)?;
            let summary = {
                let mut table =
                    txn.open_table(TableDefinition::<KvKey, &[u8]>::new(&self.kv_table)).map_err(engine)?;
                fill(&txn, &mut table)?
            };
            txn.commit().map_err(engine)?;
            summary
        };
        let loaded = load(&self.db_read(), &self.kv_table, &self.meta_table)?;
        self.take_loaded(&mut kv, loaded);
        drop(kv);
        self.refresh_size()?;
        Ok(summary)
    }

    /// Checks a stream [`StateStore::export`] wrote without importing it: every frame's
    /// checksum, every record and meta value, and the closing counts. A member checks a
    /// snapshot it received before it lets go of its own state for it.
    pub fn check_snapshot(input: &mut dyn Read) -> Result<ExportSummary, StorageError> {
        let mut meta = MetaCheck::default();
        let summary = walk_snapshot(input, |_, _, _| Ok(()), |key, value| meta.see(key, value))?;
        meta.finish()?;
        Ok(summary)
    }

    /// etcd's HashKV: a hash of the records up to `revision` (0 for the newest), with the
    /// compaction revision and the revision hashed. Equal on members that agree.
    pub fn hash_kv(&self, revision: i64) -> Result<Result<(u32, i64, i64), EtcdError>, StorageError> {
        let (txn, current, compacted, unreclaimed) = {
            let kv = self.kv_read_exact()?;
            let txn = self.begin_read()?;
            (txn, kv.current_revision(), kv.compact_revision(), kv.unreclaimed().clone())
        };
        let at = if revision <= 0 { current } else { revision };
        if at > current {
            return Ok(Err(EtcdError::FutureRev));
        }
        if at < compacted {
            return Ok(Err(EtcdError::Compacted));
        }
        let table = txn.open_table(TableDefinition::<KvKey, &[u8]>::new(&self.kv_table)).map_err(engine)?;
        let mut hasher = crc32fast::Hasher::new();
        for item in table.range::<KvKey>(..=(at as u64, u64::MAX)).map_err(engine)? {
            let (key, value) = item.map_err(engine)?;
            let (main, sub) = key.value();
            if unreclaimed.contains(Rev::new(main as i64, sub as i64)) {
                continue;
            }
            hasher.update(&main.to_be_bytes());
            hasher.update(&sub.to_be_bytes());
            hasher.update(value.value());
        }
        Ok(Ok((hasher.finalize(), compacted, at)))
    }

    /// Every record the keyspace still holds (all revisions since the last compaction), in
    /// revision order: the key-value as written, and whether it is a deletion's tombstone.
    /// The simulator reads it to learn which writes of unknown outcome took effect.
    pub fn records(&self) -> Result<Vec<(KeyValue, bool)>, StorageError> {
        let (txn, unreclaimed) = {
            let kv = self.kv_read_exact()?;
            (self.begin_read()?, kv.unreclaimed().clone())
        };
        let table = txn.open_table(TableDefinition::<KvKey, &[u8]>::new(&self.kv_table)).map_err(engine)?;
        let mut records = Vec::new();
        for item in table.range::<KvKey>(..).map_err(engine)? {
            let (key, value) = item.map_err(engine)?;
            let (main, sub) = key.value();
            let rev = Rev { main: main as i64, sub: sub as i64 };
            if unreclaimed.contains(rev) {
                continue;
            }
            let stored = decode_kv(rev, value.value())?;
            records.push((stored.kv, stored.tombstone));
        }
        Ok(records)
    }

    /// Checks that the file holds exactly the records the key index refers to.
    pub fn verify(&self) -> Result<(), StorageError> {
        let kv = self.kv_read()?;
        let txn = self.begin_read()?;
        let table = txn.open_table(TableDefinition::<KvKey, &[u8]>::new(&self.kv_table)).map_err(engine)?;
        let records = table.len().map_err(engine)? as usize;
        kv.check_backend(&TableReader { table: &table }, records)?;
        Ok(())
    }
}

/// What [`load`] reads from a state file, or an import indexed as it wrote one.
struct Loaded {
    kv: KvStore,
    applied: Option<u64>,
    /// See [`StateStats::in_use_bytes`].
    record_bytes: u64,
}

/// Rebuilds the key index from every record in the file, counting their bytes.
fn load(db: &Database, kv_table: &str, meta_table: &str) -> Result<Loaded, StorageError> {
    let txn = db.begin_read().map_err(engine)?;
    let meta = txn.open_table(TableDefinition::<&str, &[u8]>::new(meta_table)).map_err(engine)?;
    let file_meta = read_file_meta(&meta)?;
    let mut restoring = if file_meta.reclaiming {
        Restoring::reclaiming(file_meta.state.compact_revision)
    } else {
        Restoring::new()
    };
    let mut record_bytes = 0u64;
    let table = txn.open_table(TableDefinition::<KvKey, &[u8]>::new(kv_table)).map_err(engine)?;
    for item in table.range::<KvKey>(..).map_err(engine)? {
        let (key, value) = item.map_err(engine)?;
        let (main, sub) = key.value();
        let rev = Rev::new(main as i64, sub as i64);
        record_bytes += (KV_KEY_BYTES + value.value().len()) as u64;
        restoring.record(rev, &decode_kv(rev, value.value())?)?;
    }
    finish_load(&meta, file_meta, restoring, record_bytes)
}

/// The scalar meta of a state file, which [`load`] reads before its records.
struct FileMeta {
    applied: Option<u64>,
    state: Meta,
    /// A compaction's records were being deleted (see [`KvStore::restore`]).
    reclaiming: bool,
}

fn read_meta(meta: &ReadOnlyTable<&str, &[u8]>, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
    match meta.get(key).map_err(engine)? {
        None => Ok(None),
        Some(v) => record::open(v.value())
            .map(|p| Some(p.to_vec()))
            .map_err(|d| StorageError::corrupt(format!("state meta {key}"), d)),
    }
}

fn read_file_meta(meta: &ReadOnlyTable<&str, &[u8]>) -> Result<FileMeta, StorageError> {
    let applied = read_meta(meta, APPLIED_INDEX)?.map(|v| decode_u64(APPLIED_INDEX, &v)).transpose()?;
    // Kept as index + 1 in memory: the largest index has no successor, and no log gets there.
    if applied == Some(u64::MAX) {
        return Err(StorageError::corrupt(
            format!("state meta {APPLIED_INDEX}"),
            "the largest index".to_string(),
        ));
    }
    let mut state = Meta::default();
    if let Some(v) = read_meta(meta, REVISION)? {
        state.current_revision = decode_u64(REVISION, &v)? as i64;
    }
    if let Some(v) = read_meta(meta, COMPACT_REVISION)? {
        state.compact_revision = decode_u64(COMPACT_REVISION, &v)? as i64;
    }
    if let Some(v) = read_meta(meta, ALARMS)? {
        state.alarms = decode_alarms(&v)?;
    }
    Ok(FileMeta { applied, state, reclaiming: read_meta(meta, RECLAIM_PENDING)?.is_some() })
}

/// Closes a store whose records `restoring` indexed with the file's leases, counter
/// sessions and auth state, adding their bytes to `record_bytes`.
fn finish_load(
    meta: &ReadOnlyTable<&str, &[u8]>,
    file_meta: FileMeta,
    restoring: Restoring,
    record_bytes: u64,
) -> Result<Loaded, StorageError> {
    let record_bytes = std::cell::Cell::new(record_bytes);
    let count = |bytes: usize| record_bytes.set(record_bytes.get().saturating_add(bytes as u64));
    let leases = meta.range::<&str>(LEASE_PREFIX..).map_err(engine)?.map_while(|item| match item {
        Ok((key, value)) if key.value().starts_with(LEASE_PREFIX) => {
            count(key.value().len() + value.value().len());
            Some(decode_lease(key.value(), value.value()))
        }
        Ok(_) => None,
        Err(e) => Some(Err(engine(e))),
    });
    let sessions = meta.range::<&str>(SESSION_PREFIX..).map_err(engine)?.map_while(|item| match item {
        Ok((key, value)) if key.value().starts_with(SESSION_PREFIX) => {
            count(key.value().len() + value.value().len());
            Some(decode_session(key.value(), value.value()))
        }
        Ok(_) => None,
        Err(e) => Some(Err(engine(e))),
    });
    let auth = read_meta(meta, AUTH)?
        .map(|v| {
            AuthState::decode(v.as_slice()).map_err(|e| {
                StorageError::corrupt(format!("state meta {AUTH}"), format!("not an auth state: {e}"))
            })
        })
        .transpose()?;
    let kv = restoring.finish(file_meta.state, leases, sessions, auth)?;
    Ok(Loaded { kv, applied: file_meta.applied, record_bytes: record_bytes.get() })
}

fn decode_lease(key: &str, frame: &[u8]) -> Result<LeaseRecord, StorageError> {
    let corrupt = |detail: String| StorageError::corrupt(format!("state meta {key}"), detail);
    let payload = record::open(frame).map_err(corrupt)?;
    let lease = LeaseRecord::decode(payload).map_err(|e| corrupt(format!("undecodable lease: {e}")))?;
    if key != lease_key(lease.id) {
        return Err(corrupt(format!("holds lease {:x}", lease.id)));
    }
    Ok(lease)
}

fn decode_session(key: &str, frame: &[u8]) -> Result<CounterSession, StorageError> {
    let payload = record::open(frame).map_err(|d| StorageError::corrupt(format!("state meta {key}"), d))?;
    CounterSession::decode(payload).map_err(|e| {
        StorageError::corrupt(format!("state meta {key}"), format!("not a counter session: {e}"))
    })
}

/// The meta values of a snapshot stream that must be in range before it replaces a state:
/// what `KvStore::restore` and `load` would refuse afterwards, refused while reading it.
#[derive(Debug)]
struct MetaCheck {
    revision: i64,
    compacted: i64,
}

impl Default for MetaCheck {
    fn default() -> MetaCheck {
        MetaCheck { revision: 1, compacted: -1 }
    }
}

impl MetaCheck {
    fn see(&mut self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        let number = || {
            let payload =
                record::open(value).map_err(|d| StorageError::corrupt(format!("state meta {key}"), d))?;
            decode_u64(key, payload)
        };
        match key {
            // Kept as index + 1 in memory: the largest index has no successor.
            APPLIED_INDEX if number()? == u64::MAX => {
                Err(StorageError::corrupt(format!("state meta {key}"), "the largest index".to_string()))
            }
            REVISION => number().map(|n| self.revision = n as i64),
            // A state being reclaimed is sent without the marker (see StateView::export).
            RECLAIM_PENDING => Err(StorageError::corrupt(
                format!("state meta {key}"),
                "a compaction's reclaim marker in a snapshot".to_string(),
            )),
            COMPACT_REVISION => number().map(|n| self.compacted = n as i64),
            _ => Ok(()),
        }
    }

    fn finish(&self) -> Result<(), StorageError> {
        let (revision, compacted) = (self.revision, self.compacted);
        if (1..=synod_mvcc::REVISION_MAX).contains(&revision) && (-1..=revision).contains(&compacted) {
            return Ok(());
        }
        Err(StorageError::corrupt(
            "state meta".to_string(),
            format!("revision {revision} with compaction revision {compacted}"),
        ))
    }
}

fn decode_u64(what: &str, bytes: &[u8]) -> Result<u64, StorageError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| {
        StorageError::corrupt(format!("state meta {what}"), format!("{} bytes, expected 8", bytes.len()))
    })?;
    Ok(u64::from_le_bytes(array))
}

fn encode_alarms(alarms: &[(u64, i32)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(alarms.len() * 12);
    for (member, alarm) in alarms {
        out.extend_from_slice(&member.to_le_bytes());
        out.extend_from_slice(&alarm.to_le_bytes());
    }
    out
}

fn decode_alarms(bytes: &[u8]) -> Result<Vec<(u64, i32)>, StorageError> {
    if !bytes.len().is_multiple_of(12) {
        return Err(StorageError::corrupt(
            "state meta alarms",
            format!("{} bytes is not a multiple of 12", bytes.len()),
        ));
    }
    Ok(bytes
        .chunks_exact(12)
        .map(|c| {
            let member = u64::from_le_bytes(c[..8].try_into().expect("chunk of 12"));
            let alarm = i32::from_le_bytes(c[8..].try_into().expect("chunk of 12"));
            (member, alarm)
        })
        .collect())
}

const TOMBSTONE: u8 = 1;

fn encode_kv(stored: &StoredKv) -> Vec<u8> {
    let mut payload = Vec::with_capacity(1 + stored.kv.encoded_len());
    payload.push(if stored.tombstone { TOMBSTONE } else { 0 });
    stored.kv.encode(&mut payload).expect("a Vec grows as needed");
    record::seal(&payload)
}

fn decode_kv(rev: Rev, frame: &[u8]) -> Result<StoredKv, BackendError> {
    let corrupt = |detail: String| BackendError::Corrupt { rev, detail };
    let payload = record::open(frame).map_err(corrupt)?;
    let (&flags, body) = payload.split_first().ok_or_else(|| corrupt("empty record".into()))?;
    if flags & !TOMBSTONE != 0 {
        return Err(corrupt(format!("unknown record flags {flags:#04x}")));
    }
    let kv = KeyValue::decode(body).map_err(|e| corrupt(format!("undecodable key-value: {e}")))?;
    if kv.key.is_empty() {
        return Err(corrupt("record without a key".into()));
    }
    Ok(StoredKv { kv, tombstone: flags & TOMBSTONE != 0 })
}

fn table_key(rev: Rev) -> KvKey {
    assert!(rev.main > 0 && rev.sub >= 0, "record revision {rev} out of range");
    (rev.main as u64, rev.sub as u64)
}

/// The state machine's view of the records and meta tables inside an apply transaction.
struct TableWriter<'a, 'txn> {
    table: &'a mut KvTable<'txn>,
    meta: &'a mut Table<'txn, &'static str, &'static [u8]>,
    /// Where the records written go too, when someone watches.
    changes: Option<&'a mut Vec<(Rev, StoredKv)>>,
    /// The record bytes written and removed, counted into the store's total once the
    /// transaction commits.
    record_bytes: RecordBytes,
}

/// The bytes of a record's key in the kv table: its revision, two u64s.
const KV_KEY_BYTES: usize = 16;

/// Record bytes added and removed by one transaction.
#[derive(Clone, Copy, Default)]
struct RecordBytes {
    added: u64,
    removed: u64,
}

impl RecordBytes {
    fn add(&mut self, bytes: usize) {
        self.added = self.added.saturating_add(bytes as u64);
    }

    fn remove(&mut self, bytes: usize) {
        self.removed = self.removed.saturating_add(bytes as u64);
    }

    fn apply_to(self, total: &AtomicU64) {
        // Only the apply thread changes the total, under the kv write lock.
        let now = total.load(Ordering::Relaxed).saturating_add(self.added).saturating_sub(self.removed);
        total.store(now, Ordering::Relaxed);
    }
}

impl RevisionRead for TableWriter<'_, '_> {
    fn get(&self, rev: Rev) -> Result<Option<StoredKv>, BackendError> {
        match self.table.get(table_key(rev)).map_err(backend_io)? {
            Some(value) => Ok(Some(decode_kv(rev, value.value())?)),
            None => Ok(None),
        }
    }
}

impl RevisionWrite for TableWriter<'_, '_> {
    fn put(&mut self, rev: Rev, stored: &StoredKv) -> Result<(), BackendError> {
        let value = encode_kv(stored);
        if let Some(old) = self.table.insert(table_key(rev), value.as_slice()).map_err(backend_io)? {
            self.record_bytes.remove(KV_KEY_BYTES + old.value().len());
        }
        self.record_bytes.add(KV_KEY_BYTES + value.len());
        if let Some(changes) = &mut self.changes {
            changes.push((rev, stored.clone()));
        }
        Ok(())
    }

    fn delete(&mut self, rev: Rev) -> Result<(), BackendError> {
        if let Some(old) = self.table.remove(table_key(rev)).map_err(backend_io)? {
            self.record_bytes.remove(KV_KEY_BYTES + old.value().len());
        }
        Ok(())
    }

    fn put_lease(&mut self, lease: &LeaseRecord) -> Result<(), BackendError> {
        self.put_meta(&lease_key(lease.id), &record::seal(&lease.encode_to_vec()))
    }

    fn delete_lease(&mut self, id: i64) -> Result<(), BackendError> {
        self.delete_meta(&lease_key(id))
    }

    fn put_session(&mut self, session: &CounterSession) -> Result<(), BackendError> {
        self.put_meta(&session_key(session.lease), &record::seal(&session.encode_to_vec()))
    }

    fn delete_session(&mut self, lease: i64) -> Result<(), BackendError> {
        self.delete_meta(&session_key(lease))
    }

    fn put_auth(&mut self, state: &AuthState) -> Result<(), BackendError> {
        self.put_meta(AUTH, &record::seal(&state.encode_to_vec()))
    }
}

impl TableWriter<'_, '_> {
    fn put_meta(&mut self, key: &str, value: &[u8]) -> Result<(), BackendError> {
        if let Some(old) = self.meta.insert(key, value).map_err(backend_io)? {
            self.record_bytes.remove(key.len() + old.value().len());
        }
        self.record_bytes.add(key.len() + value.len());
        Ok(())
    }

    fn delete_meta(&mut self, key: &str) -> Result<(), BackendError> {
        if let Some(old) = self.meta.remove(key).map_err(backend_io)? {
            self.record_bytes.remove(key.len() + old.value().len());
        }
        Ok(())
    }
}

/// The records table in a read snapshot.
struct TableReader<'a> {
    table: &'a redb::ReadOnlyTable<KvKey, &'static [u8]>,
}

impl RevisionRead for TableReader<'_> {
    fn get(&self, rev: Rev) -> Result<Option<StoredKv>, BackendError> {
        match self.table.get(table_key(rev)).map_err(backend_io)? {
            Some(value) => Ok(Some(decode_kv(rev, value.value())?)),
            None => Ok(None),
        }
    }
}

fn backend_io(error: impl Into<redb::Error>) -> BackendError {
    BackendError::Io(Box::new(error.into()))
}

/// Where a defragment or an import writes the new state file before it replaces the old.
fn replacement_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".new");
    PathBuf::from(name)
}

/// Where [`StateStore::prepare_import`] builds a received state: a file of its own for each
/// preparation, beside the state file, so that a retried transfer never shares one with an
/// earlier attempt. Process-wide numbering: the simulator runs a member's dead and
/// restarted incarnations in one process.
fn incoming_path(path: &Path) -> PathBuf {
    static INCOMING: AtomicU64 = AtomicU64::new(0);
    let mut name = path.as_os_str().to_owned();
    name.push(format!(
        "{INCOMING_SUFFIX}{}-{}",
        std::process::id(),
        INCOMING.fetch_add(1, Ordering::Relaxed)
    ));
    PathBuf::from(name)
}

const INCOMING_SUFFIX: &str = ".incoming-";

/// The defragment's and the imports' files beside the state file at `path`.
fn unfinished_files(path: &Path) -> Result<Vec<PathBuf>, StorageError> {
    let mut found = vec![replacement_path(path)];
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(found);
    };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let mut incoming = name.to_owned();
    incoming.push(INCOMING_SUFFIX);
    let incoming = incoming.to_string_lossy().into_owned();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(source) => return Err(StorageError::Io { path: dir.to_path_buf(), source }),
    };
    for entry in entries {
        let entry = entry.map_err(|source| StorageError::Io { path: dir.to_path_buf(), source })?;
        if entry.file_name().to_string_lossy().starts_with(&incoming) {
            found.push(entry.path());
        }
    }
    Ok(found)
}

/// A state file being built or prepared and not yet in place: deleted when dropped so.
struct PreparedFile {
    db: Option<Database>,
    path: PathBuf,
}

impl PreparedFile {
    fn database(&self) -> &Database {
        self.db.as_ref().expect("a prepared file has its database until it is swapped in")
    }
}

impl Drop for PreparedFile {
    fn drop(&mut self) {
        if let Some(db) = self.db.take() {
            drop(db);
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A state [`StateStore::prepare_import`] built from a snapshot stream, for
/// [`StateStore::install`]. Dropped without being installed, it leaves nothing behind.
pub struct PreparedState(Prepared);

enum Prepared {
    File { file: PreparedFile, loaded: Box<Loaded> },
    Stream(Vec<u8>),
}

impl std::fmt::Debug for PreparedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Prepared::File { file, .. } => write!(f, "PreparedState({})", file.path.display()),
            Prepared::Stream(stream) => write!(f, "PreparedState({} bytes)", stream.len()),
        }
    }
}

/// Records a defragment copies per transaction: few enough that a transaction's dirty
/// pages stay small, many enough that commits cost little (etcd copies 10,000 per batch).
const COPY_BATCH_RECORDS: usize = 10_000;

/// An import writes a transaction per this many records or [`IMPORT_BATCH_BYTES`] of them,
/// whichever comes first: they are held in memory until written.
const IMPORT_BATCH_RECORDS: usize = 10_000;
const IMPORT_BATCH_BYTES: usize = 16 << 20;

/// Copies `table` from `from` into the empty database `to`, `batch` entries per
/// transaction, none of them durable: the caller makes the copy durable at the end.
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    from: &redb::ReadTransaction,
    to: &Database,
    table: TableDefinition<K, V>,
    batch: usize,
) -> Result<(), StorageError> {
    let source = from.open_table(table).map_err(engine)?;
    let mut entries = source.range::<K::SelfType<'_>>(..).map_err(engine)?;
    loop {
        let mut txn = to.begin_write().map_err(engine)?;
        txn.set_durability(Durability::None).map_err(engine)?;
        let mut copied = 0;
        let mut done = false;
        {
            let mut target = txn.open_table(table).map_err(engine)?;
            while copied < batch {
                let Some(entry) = entries.next() else {
                    done = true;
                    break;
                };
                let (key, value) = entry.map_err(engine)?;
                target.insert(key.value(), value.value()).map_err(engine)?;
                copied += 1;
            }
        }
        txn.commit().map_err(engine)?;
        if done {
            return Ok(());
        }
    }
}

/// Opens a redb file for exclusive use by this process, verifying every checksum.
pub(crate) fn open_database(path: &Path, cache_bytes: usize) -> Result<Database, StorageError> {
    database_builder(cache_bytes).create(path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StorageError::InUse { path: path.to_path_buf() },
        e => StorageError::Engine(e.into()),
    })
}

pub(crate) fn database_builder(cache_bytes: usize) -> redb::Builder {
    let mut builder = Database::builder();
    // redb's default cache is 1 GiB, which a member would fill with pages the kernel's page
    // cache holds anyway.
    builder.set_cache_size(cache_bytes);
    // A plain open trusts the file and may panic on a damaged one; checking on open turns
    // damage into an error. It reads the whole file once per start (about 1 ms per MB).
    builder.set_check_integrity_on_open(true);
    builder
}

#[cfg(test)]
mod tests {
    use synod_api::etcdserverpb::PutRequest;
    use synod_api::synodpb::command;

    use super::*;

    /// The frames of a snapshot stream, without its magic line and end frame.
    fn frames(stream: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut input = &stream[SNAPSHOT_MAGIC.len()..];
        let mut frames = Vec::new();
        loop {
            let (kind, payload) = read_frame(&mut input).unwrap();
            if kind == FRAME_END {
                return frames;
            }
            frames.push((kind, payload));
        }
    }

    /// A stream of `frames`, every one checksummed and counted as a good stream's are.
    fn stream_of(frames: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut out = SNAPSHOT_MAGIC.to_vec();
        let count = |kind| frames.iter().filter(|(k, _)| *k == kind).count() as u64;
        for (kind, payload) in frames {
            write_frame(&mut out, *kind, payload).unwrap();
        }
        let mut end = count(FRAME_RECORD).to_le_bytes().to_vec();
        end.extend_from_slice(&count(FRAME_META).to_le_bytes());
        write_frame(&mut out, FRAME_END, &end).unwrap();
        out
    }

    fn meta_frame(key: &str, value: &[u8]) -> (u8, Vec<u8>) {
        let mut payload = (key.len() as u16).to_le_bytes().to_vec();
        payload.extend_from_slice(key.as_bytes());
        payload.extend_from_slice(&record::seal(value));
        (FRAME_META, payload)
    }

    fn meta_key(frame: &(u8, Vec<u8>)) -> Option<&str> {
        let (kind, payload) = frame;
        if *kind != FRAME_META {
            return None;
        }
        let len = u16::from_le_bytes(payload[..2].try_into().unwrap()) as usize;
        Some(std::str::from_utf8(&payload[2..2 + len]).unwrap())
    }

    /// A stream whose every frame is intact but whose records do not fit together, or do
    /// not fit the meta that comes after them, or that carries a compaction's reclaim
    /// marker, is refused, and leaves the state as it was and no file behind.
    #[test]
    fn an_intact_stream_that_does_not_fit_together_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let put = |key: &str| Command {
            op: Some(command::Op::Put(PutRequest {
                key: key.into(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let source = StateStore::open(&dir.path().join("a.redb"), GroupId::FIRST).unwrap();
        let commands = [put("a"), put("b"), put("a")];
        let entries: Vec<_> =
            commands.iter().enumerate().map(|(i, c)| (LogIndex(i as u64 + 1), Some(c))).collect();
        source.apply(&entries, &[]).unwrap();
        let mut stream = Vec::new();
        source.export(&mut stream, &[]).unwrap();
        let good = frames(&stream);
        let target_path = dir.path().join("b.redb");
        let target = StateStore::open(&target_path, GroupId::FIRST).unwrap();
        target.import(&mut stream_of(&good).as_slice()).expect("the stream as exported is taken");
        assert_eq!(target.current_revision().unwrap(), 4);

        let behind: Vec<_> = good
            .iter()
            .map(|f| {
                if meta_key(f) == Some(REVISION) {
                    meta_frame(REVISION, &3u64.to_le_bytes())
                } else {
                    f.clone()
                }
            })
            .collect();
        let mut swapped = good.clone();
        swapped.swap(0, 1);
        let mut reclaiming = good.clone();
        reclaiming.push(meta_frame(RECLAIM_PENDING, b""));
        for (what, bad) in [
            ("a record after the revision", behind),
            ("records out of order", swapped),
            ("a reclaim marker", reclaiming),
        ] {
            let error = target.import(&mut stream_of(&bad).as_slice()).expect_err(what);
            assert!(error.is_corruption(), "{what}: {error}");
            assert_eq!(target.current_revision().unwrap(), 4, "{what}: the state is kept");
            assert_eq!(
                unfinished_files(&target_path).unwrap().iter().filter(|f| f.exists()).count(),
                0,
                "{what}"
            );
        }
    }
}
