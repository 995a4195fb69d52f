//! redb 4.6.0 adapter mirroring synod's legacy `raftlog.redb`: one table per group
//! ("log/<group>", u64 -> bytes), one write transaction per append, Durability::Immediate,
//! 16 MiB cache (as synod sizes its log database).

use std::path::Path;

use logbench_core::{Append, Backend, Log};
use redb::{Builder, Database, Durability, ReadableDatabase, TableDefinition};

pub struct RedbLog {
    db: Database,
}

fn table(group: u64) -> String {
    format!("log/{group}")
}

impl Log for RedbLog {
    fn append(&mut self, batch: &[Append]) {
        let mut txn = self.db.begin_write().unwrap();
        txn.set_durability(Durability::Immediate).unwrap();
        for (group, first, ents) in batch {
            let name = table(*group);
            let mut t = txn.open_table(TableDefinition::<u64, &[u8]>::new(&name)).unwrap();
            for (i, e) in ents.iter().enumerate() {
                t.insert(first + i as u64, e.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    fn purge(&mut self, group: u64, through: u64) {
        let mut txn = self.db.begin_write().unwrap();
        txn.set_durability(Durability::Immediate).unwrap();
        {
            let name = table(group);
            let mut t = txn.open_table(TableDefinition::<u64, &[u8]>::new(&name)).unwrap();
            t.retain_in(..=through, |_, _| false).unwrap();
        }
        txn.commit().unwrap();
    }
    fn read(&self, group: u64, index: u64) -> Vec<u8> {
        let txn = self.db.begin_read().unwrap();
        let name = table(group);
        let t = txn.open_table(TableDefinition::<u64, &[u8]>::new(&name)).unwrap();
        let v = t.get(index).unwrap().expect("entry");
        v.value().to_vec()
    }
}

pub struct RedbBackend {
    pub cache_size: usize,
}

impl Default for RedbBackend {
    fn default() -> Self {
        RedbBackend { cache_size: 16 << 20 }
    }
}

impl Backend for RedbBackend {
    fn name(&self) -> &'static str {
        "redb"
    }
    fn config(&self) -> String {
        format!(
            "redb 4.6.0: table per group (u64 -> &[u8]), one write txn per append, Durability::Immediate, \
             cache {} MiB, purge = retain_in(..=through) in one Immediate txn",
            self.cache_size >> 20
        )
    }
    fn open(&self, dir: &Path) -> Box<dyn Log> {
        let db = Builder::new().set_cache_size(self.cache_size).create(dir.join("log.redb")).unwrap();
        Box::new(RedbLog { db })
    }
}
