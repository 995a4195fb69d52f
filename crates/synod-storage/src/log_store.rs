//! [`LogStore`]: the replicated log of each consensus group, plus the member's durable
//! metadata, in `raftlog.redb`.
//!
//! An append is one redb write transaction committed with `Durability::Immediate`: one
//! fdatasync, after which the entries survive any crash. redb has no group commit of its
//! own, so callers batch: the log writer folds every pending entry into one append. Entries
//! are opaque bytes to this store; it only frames them with a checksum and keeps them in
//! index order, one table per group.

use std::ops::Range;
use std::path::{Path, PathBuf};

pub use redb::Durability;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use synod_base::{GroupId, LogIndex};

use crate::error::engine;
use crate::{StorageError, record};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// The meta key under which `synodctl snapshot restore` leaves the cluster it restored a
/// data dir for (a `synodpb::RestoredCluster`), read by the member's first start.
pub const RESTORED_CLUSTER_META: &str = "restored-cluster";

pub struct LogStore {
    db: Database,
    path: PathBuf,
}

/// One change to the log file; see [`LogStore::write`].
#[derive(Clone, Copy, Debug)]
pub enum LogOp<'a> {
    /// Entries that follow the group's last entry without a gap.
    Append { group: GroupId, entries: &'a [(LogIndex, &'a [u8])] },
    /// Removes the entries from `from` on.
    TruncateFrom { group: GroupId, from: LogIndex },
    /// Removes the entries up to and including `through`.
    PurgeThrough { group: GroupId, through: LogIndex },
    /// Sets a metadata value.
    PutMeta { key: &'a str, value: &'a [u8] },
    /// Removes a metadata value.
    DeleteMeta { key: &'a str },
}

fn log_table(group: GroupId) -> String {
    format!("log/{}", group.0)
}

impl LogStore {
    /// Opens (or creates) the log file. The whole file's checksums are verified on open,
    /// so a damaged file is refused instead of read.
    pub fn open(path: &Path) -> Result<LogStore, StorageError> {
        let db = open_database(path, LOG_CACHE_BYTES)?;
        Ok(LogStore { db, path: path.to_path_buf() })
    }

    /// Opens the log on a storage backend other than a file (a simulated disk in tests).
    pub fn open_on(backend: impl redb::StorageBackend, name: &str) -> Result<LogStore, StorageError> {
        let db = database_builder(LOG_CACHE_BYTES)
            .create_with_backend(backend)
            .map_err(|e| StorageError::Engine(e.into()))?;
        Ok(LogStore { db, path: PathBuf::from(name) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `entries` (contiguous, following the group's last entry) and purges entries
    /// up to and including `purge_through`, in one durable commit.
    pub fn append(
        &self,
        group: GroupId,
        entries: &[(LogIndex, &[u8])],
        purge_through: Option<LogIndex>,
    ) -> Result<(), StorageError> {
        let mut ops = vec![LogOp::Append { group, entries }];
        if let Some(through) = purge_through {
            ops.push(LogOp::PurgeThrough { group, through });
        }
        self.write(&ops, Durability::Immediate)
    }

    /// Removes the group's entries from `from` on (a conflicting suffix), durably.
    pub fn truncate_from(&self, group: GroupId, from: LogIndex) -> Result<(), StorageError> {
        self.write(&[LogOp::TruncateFrom { group, from }], Durability::Immediate)
    }

    /// Applies `ops` in order in one transaction: with [`Durability::Immediate`] one
    /// fdatasync makes all of them durable together (group commit); with
    /// [`Durability::None`] they become durable with the next immediate write.
    pub fn write(&self, ops: &[LogOp<'_>], durability: Durability) -> Result<(), StorageError> {
        let mut txn = self.db.begin_write().map_err(engine)?;
        txn.set_durability(durability).map_err(engine)?;
        for op in ops {
            match *op {
                LogOp::Append { group, entries } => {
                    let name = log_table(group);
                    let mut table =
                        txn.open_table(TableDefinition::<u64, &[u8]>::new(&name)).map_err(engine)?;
                    let mut expected = table.last().map_err(engine)?.map(|(k, _)| k.value() + 1);
                    for (index, payload) in entries {
                        if let Some(expected) = expected
                            && index.0 != expected
                        {
                            return Err(StorageError::corrupt(
                                format!("log of group {}", group.0),
                                format!("append of entry {index} where entry {expected} comes next"),
                            ));
                        }
                        expected = Some(index.0 + 1);
                        table.insert(index.0, record::seal(payload).as_slice()).map_err(engine)?;
                    }
                }
                LogOp::TruncateFrom { group, from } => {
                    let name = log_table(group);
                    let mut table =
                        txn.open_table(TableDefinition::<u64, &[u8]>::new(&name)).map_err(engine)?;
                    table.retain_in(from.0.., |_, _| false).map_err(engine)?;
                }
                LogOp::PurgeThrough { group, through } => {
                    let name = log_table(group);
                    let mut table =
                        txn.open_table(TableDefinition::<u64, &[u8]>::new(&name)).map_err(engine)?;
                    table.retain_in(..=through.0, |_, _| false).map_err(engine)?;
                }
                LogOp::PutMeta { key, value } => {
                    let mut table = txn.open_table(META).map_err(engine)?;
                    table.insert(key, record::seal(value).as_slice()).map_err(engine)?;
                }
                LogOp::DeleteMeta { key } => {
                    let mut table = txn.open_table(META).map_err(engine)?;
                    table.remove(key).map_err(engine)?;
                }
            }
        }
        txn.commit().map_err(engine)
    }

    /// The first and last index the group's log holds, if any.
    pub fn bounds(&self, group: GroupId) -> Result<Option<(LogIndex, LogIndex)>, StorageError> {
        let name = log_table(group);
        let definition: TableDefinition<u64, &[u8]> = TableDefinition::new(&name);
        let txn = self.db.begin_read().map_err(engine)?;
        let table = match txn.open_table(definition) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(engine(e)),
        };
        let first = table.first().map_err(engine)?.map(|(k, _)| k.value());
        let last = table.last().map_err(engine)?.map(|(k, _)| k.value());
        Ok(first.zip(last).map(|(f, l)| (LogIndex(f), LogIndex(l))))
    }

    /// The entries with indexes in `range`, in order, each checked against its checksum.
    /// Entries may be missing at the start of the range (purged, or never written) but not
    /// after the first one found: a hole there is corruption.
    pub fn entries(
        &self,
        group: GroupId,
        range: Range<LogIndex>,
    ) -> Result<Vec<(LogIndex, Vec<u8>)>, StorageError> {
        let name = log_table(group);
        let definition: TableDefinition<u64, &[u8]> = TableDefinition::new(&name);
        let txn = self.db.begin_read().map_err(engine)?;
        let table = match txn.open_table(definition) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(engine(e)),
        };
        let mut out: Vec<(LogIndex, Vec<u8>)> = Vec::new();
        for item in table.range(range.start.0..range.end.0).map_err(engine)? {
            let (key, value) = item.map_err(engine)?;
            let index = key.value();
            if let Some((previous, _)) = out.last()
                && index != previous.0 + 1
            {
                return Err(StorageError::corrupt(
                    format!("log of group {}", group.0),
                    format!("entry {} is missing (next is {index})", previous.0 + 1),
                ));
            }
            let payload = record::open(value.value()).map_err(|detail| {
                StorageError::corrupt(format!("log entry {index} of group {}", group.0), detail)
            })?;
            out.push((LogIndex(index), payload.to_vec()));
        }
        Ok(out)
    }

    /// A durable metadata value.
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let txn = self.db.begin_read().map_err(engine)?;
        let table = match txn.open_table(META) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(engine(e)),
        };
        let Some(value) = table.get(key).map_err(engine)? else {
            return Ok(None);
        };
        let payload = record::open(value.value())
            .map_err(|detail| StorageError::corrupt(format!("log meta {key}"), detail))?;
        Ok(Some(payload.to_vec()))
    }

    /// Stores a metadata value durably.
    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.write(&[LogOp::PutMeta { key, value }], Durability::Immediate)
    }

    /// Removes a metadata value durably (nothing happens if there is none).
    pub fn delete_meta(&self, key: &str) -> Result<(), StorageError> {
        self.write(&[LogOp::DeleteMeta { key }], Durability::Immediate)
    }
}

/// Opens a redb file for exclusive use by this process, verifying every checksum.
pub(crate) fn open_database(path: &Path, cache_bytes: usize) -> Result<Database, StorageError> {
    database_builder(cache_bytes).create(path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StorageError::InUse { path: path.to_path_buf() },
        e => StorageError::Engine(e.into()),
    })
}

/// redb's page cache for the log: appends are read back from consensus's in-memory tail,
/// so the file is read only by followers far behind and at startup.
pub(crate) const LOG_CACHE_BYTES: usize = 16 << 20;

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
    use super::*;

    fn store() -> (tempfile::TempDir, LogStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(&dir.path().join("log.redb")).unwrap();
        (dir, store)
    }

    /// Appended entries read back in order; a purge drops the prefix; a truncate the suffix.
    #[test]
    fn append_read_purge_truncate() {
        let (_dir, log) = store();
        let g = GroupId::FIRST;
        assert_eq!(log.bounds(g).unwrap(), None);
        let entries: Vec<(LogIndex, Vec<u8>)> = (1..=10).map(|i| (LogIndex(i), vec![i as u8; 3])).collect();
        let refs: Vec<(LogIndex, &[u8])> = entries.iter().map(|(i, p)| (*i, p.as_slice())).collect();
        log.append(g, &refs[..6], None).unwrap();
        log.append(g, &refs[6..], Some(LogIndex(3))).unwrap();
        assert_eq!(log.bounds(g).unwrap(), Some((LogIndex(4), LogIndex(10))));
        let read = log.entries(g, LogIndex(1)..LogIndex(100)).unwrap();
        assert_eq!(read, entries[3..].to_vec());
        log.truncate_from(g, LogIndex(8)).unwrap();
        assert_eq!(log.bounds(g).unwrap(), Some((LogIndex(4), LogIndex(7))));
        assert_eq!(log.entries(g, LogIndex(6)..LogIndex(7)).unwrap(), entries[5..6].to_vec());
    }

    /// Groups have separate logs in the same file.
    #[test]
    fn groups_are_separate() {
        let (_dir, log) = store();
        log.append(GroupId(0), &[(LogIndex(1), b"zero".as_slice())], None).unwrap();
        log.append(GroupId(7), &[(LogIndex(5), b"seven".as_slice())], None).unwrap();
        assert_eq!(log.bounds(GroupId(0)).unwrap(), Some((LogIndex(1), LogIndex(1))));
        assert_eq!(log.bounds(GroupId(7)).unwrap(), Some((LogIndex(5), LogIndex(5))));
        assert_eq!(log.entries(GroupId(7), LogIndex(5)..LogIndex(15)).unwrap()[0].1, b"seven");
    }

    /// A second process (here: a second open) cannot use the same file.
    #[test]
    fn second_open_is_refused() {
        let (dir, _log) = store();
        let err = LogStore::open(&dir.path().join("log.redb")).err().expect("second open fails");
        assert!(matches!(err, StorageError::InUse { .. }), "{err}");
    }

    /// Metadata survives a reopen.
    #[test]
    fn meta_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb");
        LogStore::open(&path).unwrap().put_meta("identity", b"abc").unwrap();
        assert_eq!(LogStore::open(&path).unwrap().meta("identity").unwrap().unwrap(), b"abc");
    }
}
