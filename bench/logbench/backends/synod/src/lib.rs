//! synod's segmented log (synod-storage `LogStore`): one record and one fdatasync per append,
//! 64 MiB zero-filled segments prepared in the background.

use std::path::Path;

use logbench_core::{Append, Backend, Log};
use synod_base::{GroupId, LogIndex};
use synod_storage::{LogOp, LogOptions, LogStore};

pub struct SynodLog {
    store: LogStore,
}

impl Log for SynodLog {
    fn append(&mut self, batch: &[Append]) {
        let entries: Vec<Vec<(LogIndex, &[u8])>> = batch
            .iter()
            .map(|(_, first, ents)| ents.iter().enumerate().map(|(i, e)| (LogIndex(first + i as u64), e.as_slice())).collect())
            .collect();
        let ops: Vec<LogOp<'_>> = batch
            .iter()
            .zip(&entries)
            .map(|((group, _, _), entries)| LogOp::Append { group: GroupId(*group), entries })
            .collect();
        self.store.write(&ops).unwrap();
    }
    fn purge(&mut self, group: u64, through: u64) {
        self.store.write(&[LogOp::PurgeThrough { group: GroupId(group), through: LogIndex(through) }]).unwrap();
    }
    fn read(&self, group: u64, index: u64) -> Vec<u8> {
        let mut read = self.store.entries(GroupId(group), LogIndex(index)..LogIndex(index + 1)).unwrap();
        read.pop().expect("entry").1
    }
}

#[derive(Default)]
pub struct SynodBackend;

impl Backend for SynodBackend {
    fn name(&self) -> &'static str {
        "synod"
    }
    fn config(&self) -> String {
        let o = LogOptions::default();
        format!(
            "synod-storage LogStore: one record + one fdatasync per append, {} MiB zero-filled segments prepared \
             in the background, purge = one durable record, segments removed when dead",
            o.segment_bytes >> 20
        )
    }
    fn open(&self, dir: &Path) -> Box<dyn Log> {
        Box::new(SynodLog { store: LogStore::open(&dir.join("log")).unwrap() })
    }
}
