//! raft-engine 0.4.2 adapter.
//!
//! raft-engine only accepts entries through `LogBatch::add_entries::<M: MessageExt>`,
//! where `M::Entry: protobuf::Message` (rust-protobuf 2.x) and `M::index(&entry)` gives
//! the Raft index. (`add_raw_entries`, which takes pre-encoded bytes, is `pub(crate)`.)
//! A prost-based codebase therefore needs a shim type implementing rust-protobuf's
//! `Message` by hand; `RawEntry` below is that shim: field 1 = index (varint),
//! field 2 = opaque bytes (e.g. the prost-encoded entry). Reads come back through
//! `protobuf::Message::merge_from`, i.e. one extra copy of the payload each way.

use std::path::Path;
use std::sync::Arc;

use logbench_core::{Append, Backend, Log};
use protobuf::{CachedSize, CodedInputStream, CodedOutputStream, Message, ProtobufResult, UnknownFields};
use raft_engine::{Config, Engine, LogBatch, MessageExt, ReadableSize};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawEntry {
    pub index: u64,
    pub data: Vec<u8>,
    unknown_fields: UnknownFields,
    cached_size: CachedSize,
}

impl protobuf::Clear for RawEntry {
    fn clear(&mut self) {
        self.index = 0;
        self.data.clear();
    }
}

impl Message for RawEntry {
    fn descriptor(&self) -> &'static protobuf::reflect::MessageDescriptor {
        unimplemented!("no reflection for the shim")
    }
    fn is_initialized(&self) -> bool {
        true
    }
    fn merge_from(&mut self, is: &mut CodedInputStream<'_>) -> ProtobufResult<()> {
        while !is.eof()? {
            let (field, wt) = is.read_tag_unpack()?;
            match field {
                1 => self.index = is.read_uint64()?,
                2 => protobuf::rt::read_singular_proto3_bytes_into(wt, is, &mut self.data)?,
                _ => protobuf::rt::read_unknown_or_skip_group(field, wt, is, &mut self.unknown_fields)?,
            }
        }
        Ok(())
    }
    fn compute_size(&self) -> u32 {
        let s = protobuf::rt::value_size(1, self.index, protobuf::wire_format::WireTypeVarint)
            + protobuf::rt::bytes_size(2, &self.data);
        self.cached_size.set(s);
        s
    }
    fn write_to_with_cached_sizes(&self, os: &mut CodedOutputStream<'_>) -> ProtobufResult<()> {
        os.write_uint64(1, self.index)?;
        os.write_bytes(2, &self.data)?;
        Ok(())
    }
    fn get_cached_size(&self) -> u32 {
        self.cached_size.get()
    }
    fn get_unknown_fields(&self) -> &UnknownFields {
        &self.unknown_fields
    }
    fn mut_unknown_fields(&mut self) -> &mut UnknownFields {
        &mut self.unknown_fields
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
    fn new() -> Self {
        Self::default()
    }
    fn default_instance() -> &'static Self {
        static I: protobuf::rt::LazyV2<RawEntry> = protobuf::rt::LazyV2::INIT;
        I.get(RawEntry::default)
    }
}

pub struct RawExt;
impl MessageExt for RawExt {
    type Entry = RawEntry;
    fn index(e: &RawEntry) -> u64 {
        e.index
    }
}

pub struct RaftEngineLog {
    engine: Arc<Engine>,
}

impl Log for RaftEngineLog {
    fn append(&mut self, batch: &[Append]) {
        let mut lb = LogBatch::with_capacity(batch.len());
        for (group, first, ents) in batch {
            let es: Vec<RawEntry> = ents
                .iter()
                .enumerate()
                .map(|(i, d)| RawEntry { index: first + i as u64, data: d.clone(), ..Default::default() })
                .collect();
            lb.add_entries::<RawExt>(*group, &es).unwrap();
        }
        self.engine.write(&mut lb, true).unwrap(); // sync = true: fdatasync before return
    }
    fn purge(&mut self, group: u64, through: u64) {
        // compact_to writes a Compact command (entries < index become garbage) ...
        self.engine.compact_to(group, through + 1);
        // ... and purge_expired_files is what actually deletes/rewrites log files
        // (only once the queue exceeds purge_threshold).
        self.engine.purge_expired_files().unwrap();
    }
    fn read(&self, group: u64, index: u64) -> Vec<u8> {
        self.engine.get_entry::<RawExt>(group, index).unwrap().expect("entry").data
    }
}

pub struct RaftEngineBackend {
    /// None = raft-engine's default (128 MiB).
    pub target_file_size: Option<u64>,
    /// None = raft-engine's default (10 GiB).
    pub purge_threshold: Option<u64>,
}

impl RaftEngineBackend {
    fn cfg(&self, dir: &Path) -> Config {
        let mut c = Config { dir: dir.to_string_lossy().into_owned(), ..Config::default() };
        if let Some(t) = self.target_file_size {
            c.target_file_size = ReadableSize(t);
        }
        if let Some(t) = self.purge_threshold {
            c.purge_threshold = ReadableSize(t);
        }
        c
    }
}

impl Backend for RaftEngineBackend {
    fn name(&self) -> &'static str {
        "raft-engine"
    }
    fn config(&self) -> String {
        let c = self.cfg(Path::new("."));
        format!(
            "raft-engine 0.4.2: write(sync=true); format {:?}, target_file_size {}, purge_threshold {}, \
             enable_log_recycle {}, prefill_for_recycle {}, batch_compression_threshold {} (lz4), recovery_threads {}, \
             recovery_mode {:?}",
            c.format_version,
            c.target_file_size,
            c.purge_threshold,
            c.enable_log_recycle,
            c.prefill_for_recycle,
            c.batch_compression_threshold,
            c.recovery_threads,
            c.recovery_mode
        )
    }
    fn open(&self, dir: &Path) -> Box<dyn Log> {
        Box::new(RaftEngineLog { engine: Arc::new(Engine::open(self.cfg(dir)).unwrap()) })
    }
}
