//! The log as synod kept it before the segmented log: `raftlog.redb`, one redb table per
//! group and one for the metadata, every value framed by [`record`]. Read once, when a
//! member of an earlier synod starts, to move it into the new log ([`crate::LogStore::open_in`]).

use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use synod_base::{GroupId, LogIndex};

use crate::error::engine;
use crate::state_store::open_database;
use crate::{StorageError, record};

/// The file's name, in the member directory or the --wal-dir.
pub const FILE: &str = "raftlog.redb";

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// A group's entries, in index order.
pub type GroupEntries = Vec<(LogIndex, Vec<u8>)>;

/// Everything the file holds.
#[derive(Debug, Default)]
pub struct Contents {
    pub meta: Vec<(String, Vec<u8>)>,
    pub groups: Vec<(GroupId, GroupEntries)>,
}

/// Reads the whole file, checking every checksum.
pub fn read(path: &Path) -> Result<Contents, StorageError> {
    let db = open_database(path, 16 << 20)?;
    let txn = db.begin_read().map_err(engine)?;
    let mut contents = Contents::default();
    for table in txn.list_tables().map_err(engine)? {
        let name = table.name().to_string();
        if name == "meta" {
            let table = txn.open_table(META).map_err(engine)?;
            for item in table.iter().map_err(engine)? {
                let (key, value) = item.map_err(engine)?;
                let key = key.value().to_string();
                let value = record::open(value.value()).map_err(|detail| {
                    StorageError::corrupt(format!("{} meta {key}", path.display()), detail)
                })?;
                contents.meta.push((key, value.to_vec()));
            }
        } else if let Some(group) = name.strip_prefix("log/").and_then(|g| g.parse().ok()) {
            let table = txn.open_table(TableDefinition::<u64, &[u8]>::new(&name)).map_err(engine)?;
            let mut entries = Vec::new();
            for item in table.iter().map_err(engine)? {
                let (index, value) = item.map_err(engine)?;
                let index = index.value();
                let value = record::open(value.value()).map_err(|detail| {
                    StorageError::corrupt(
                        format!("{} entry {index} of group {group}", path.display()),
                        detail,
                    )
                })?;
                entries.push((LogIndex(index), value.to_vec()));
            }
            contents.groups.push((GroupId(group), entries));
        }
    }
    Ok(contents)
}
