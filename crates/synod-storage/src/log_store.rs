//! [`LogStore`]: the replicated log of every consensus group on a member, and the member's
//! durable metadata, in one directory of append-only segment files (`log_format`).
//!
//! Every [`LogStore::write`] is one record, a batch of operations of any groups, written at
//! the end of the active segment and made durable by one fdatasync: a caller that batches
//! the pending appends of every group gets one sync for all of them (group commit). Segments are zero-filled and
//! given their header before use (the next one in the background), so a sync writes data
//! blocks only, never the file's size or extents.
//!
//! Nothing is read back on the write path: an in-memory index knows, for every live entry
//! of every group, the segment, offset, length and CRC of its bytes, and the value of every
//! metadata key. Reads are positioned reads of the files, checked against the CRC.
//!
//! Space comes back by whole segments, oldest first, once nothing in them is live (every
//! entry purged or truncated, every meta key rewritten since). A segment still holding a
//! few live items (a group that lags, a key that never changes) while newer segments
//! exist is emptied by copying those items forward into the active segment (a rewrite
//! record), then removed. Removal is only ever of the oldest segment, so the records left
//! always replay, in order, to the same index.
//!
//! Opening replays every segment. A record that fails its checksum at the very end of the
//! newest segment, with nothing valid after it and a whole sector under it never written
//! (zeros), is the write a crash interrupted before its sync: it is cut off, whatever such
//! a write left after the last record is zeroed, and the log goes on from there. Damage anywhere else (an older
//! segment, or valid records after the bad one) refuses the open with the file and offset:
//! the member must not serve from a log that lost acknowledged entries.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use synod_base::{GroupId, LogIndex};

use crate::StorageError;
pub use crate::log_format::LogOp;
use crate::log_format::{self, DecodedOp, Frame, PayloadWriter, SEGMENT_HEADER_BYTES};
use crate::log_fs::{FsDir, LogDir, LogFile};

/// The meta key under which `synodctl snapshot restore` leaves the cluster it restored a
/// data dir for (a `synodpb::RestoredCluster`), read by the member's first start.
pub const RESTORED_CLUSTER_META: &str = "restored-cluster";

/// The largest record a write may make: a bound on what an open reads into memory at once.
pub const MAX_RECORD_BYTES: u64 = 1 << 30;

/// Set once a log kept in `raftlog.redb` by an earlier synod has been moved in whole.
const MIGRATED_META: &str = "moved-from-raftlog.redb";
/// Present in the log directory while a `raftlog.redb` is being moved in.
const MIGRATING_FILE: &str = "MIGRATING";

/// How the log lays out and prepares its files.
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// The size of a segment file (a record larger than this gets a segment of its own).
    pub segment_bytes: u64,
    /// Prepare the next segment on a thread of its own while the active one fills (a
    /// server); or when it is needed, on the writer (the simulator, for determinism).
    pub prepare_in_background: bool,
    /// A segment whose live bytes are at most this share of `segment_bytes` is rewritten
    /// forward when it is the oldest of more than two.
    pub rewrite_below: f64,
}

impl Default for LogOptions {
    fn default() -> LogOptions {
        LogOptions { segment_bytes: 64 << 20, prepare_in_background: true, rewrite_below: 0.25 }
    }
}

/// Where an entry's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Location {
    segment: u64,
    offset: u64,
    len: u32,
    crc: u32,
}

struct Segment {
    file: Arc<dyn LogFile>,
    /// Entries and meta values whose newest copy is here.
    live: u64,
    live_bytes: u64,
}

struct Meta {
    value: Vec<u8>,
    segment: u64,
}

/// What is in the files, and where.
#[derive(Default)]
struct Index {
    groups: HashMap<GroupId, BTreeMap<u64, Location>>,
    meta: HashMap<String, Meta>,
    segments: BTreeMap<u64, Segment>,
}

/// The end of the log, where the next record goes.
struct Writer {
    sequence: u64,
    file: Arc<dyn LogFile>,
    offset: u64,
    capacity: u64,
    /// The next segment, being prepared.
    next: Option<Preparing>,
    /// The first failed write: the file's end is unknown after it, so every later write
    /// fails with it (an fsync error is never retried).
    failed: Option<String>,
    /// Collecting old segments failed; tried again once a new segment starts.
    collection_blocked: bool,
}

enum Preparing {
    Thread(std::thread::JoinHandle<std::io::Result<Arc<dyn LogFile>>>),
    Ready(std::io::Result<Arc<dyn LogFile>>),
}

pub struct LogStore {
    dir: Arc<dyn LogDir>,
    path: PathBuf,
    options: LogOptions,
    writer: Mutex<Writer>,
    index: RwLock<Index>,
}

fn segment_name(sequence: u64) -> String {
    format!("{sequence:016x}.log")
}

fn preparing_name(sequence: u64) -> String {
    format!("{sequence:016x}.log.tmp")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".log")?;
    (hex.len() == 16).then(|| u64::from_str_radix(hex, 16).ok()).flatten()
}

/// Creates segment `sequence` under its preparing name: zero-filled to `bytes`, its header
/// written, all synced; [`LogStore`] renames it into place when it is needed.
fn prepare_segment(dir: &dyn LogDir, sequence: u64, bytes: u64) -> std::io::Result<Arc<dyn LogFile>> {
    let file = dir.create(&preparing_name(sequence))?;
    // Page by page: the kernel caches a file in units of the writes that filled it (ext4's
    // large folios), and a record written into a 1 MiB unit later makes its sync write all
    // of that unit; 4 KiB units keep a sync to the pages a record touched.
    const CHUNK: u64 = 4096;
    let zeros = vec![0u8; CHUNK as usize];
    let mut at = 0;
    while at < bytes {
        let len = CHUNK.min(bytes - at);
        file.write_at(at, &zeros[..len as usize])?;
        at += len;
    }
    file.write_at(0, &log_format::segment_header(sequence))?;
    file.sync_data()?;
    Ok(file)
}

fn io_error(path: PathBuf) -> impl FnOnce(std::io::Error) -> StorageError {
    move |source| StorageError::Io { path, source }
}

fn read_lock<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write_lock<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Index {
    /// The open files of the segments `locations` are in.
    fn files<'a>(&self, locations: impl Iterator<Item = &'a Location>) -> HashMap<u64, Arc<dyn LogFile>> {
        let mut files = HashMap::new();
        for location in locations {
            if let Some(segment) = self.segments.get(&location.segment) {
                files.entry(location.segment).or_insert_with(|| segment.file.clone());
            }
        }
        files
    }

    fn segment(&mut self, sequence: u64) -> Result<&mut Segment, String> {
        self.segments.get_mut(&sequence).ok_or_else(|| format!("segment {sequence} is not open"))
    }

    fn forget(&mut self, location: Location) {
        if let Some(segment) = self.segments.get_mut(&location.segment) {
            segment.live -= 1;
            segment.live_bytes -= u64::from(location.len);
        }
    }

    /// Applies a record's operations: `payload` was read from (or written at) `offset` of
    /// segment `sequence`, where its bytes start at `payload_offset`.
    fn apply(&mut self, sequence: u64, payload_offset: u64, payload: &[u8]) -> Result<(), String> {
        for op in log_format::decode_ops(payload)? {
            match op {
                DecodedOp::Append { group, first, entries }
                | DecodedOp::Rewrite { group, first, entries } => {
                    for (n, (at, len)) in entries.into_iter().enumerate() {
                        let location = Location {
                            segment: sequence,
                            offset: payload_offset + at as u64,
                            len: len as u32,
                            crc: crc32fast::hash(&payload[at..at + len]),
                        };
                        let segment = self.segment(sequence)?;
                        segment.live += 1;
                        segment.live_bytes += len as u64;
                        let replaced =
                            self.groups.entry(group).or_default().insert(first.0 + n as u64, location);
                        if let Some(old) = replaced {
                            self.forget(old);
                        }
                    }
                }
                DecodedOp::TruncateFrom { group, from } => {
                    if let Some(log) = self.groups.get_mut(&group) {
                        let removed = log.split_off(&from.0);
                        removed.into_values().for_each(|location| self.forget(location));
                    }
                }
                DecodedOp::PurgeThrough { group, through } => {
                    if let Some(log) = self.groups.get_mut(&group) {
                        let kept = match through.0.checked_add(1) {
                            Some(from) => log.split_off(&from),
                            None => BTreeMap::new(),
                        };
                        let removed = std::mem::replace(log, kept);
                        removed.into_values().for_each(|location| self.forget(location));
                    }
                }
                DecodedOp::PutMeta { key, value } => {
                    let segment = self.segment(sequence)?;
                    segment.live += 1;
                    segment.live_bytes += value.len() as u64;
                    let old =
                        self.meta.insert(key.to_string(), Meta { value: value.to_vec(), segment: sequence });
                    if let Some(old) = old {
                        self.forget_meta(&old);
                    }
                }
                DecodedOp::DeleteMeta { key } => {
                    if let Some(old) = self.meta.remove(key) {
                        self.forget_meta(&old);
                    }
                }
            }
        }
        Ok(())
    }

    fn forget_meta(&mut self, meta: &Meta) {
        if let Some(segment) = self.segments.get_mut(&meta.segment) {
            segment.live -= 1;
            segment.live_bytes -= meta.value.len() as u64;
        }
    }

    /// The first and last index of the group, if it holds entries, and whether they are
    /// contiguous.
    fn bounds(&self, group: GroupId) -> Option<(u64, u64)> {
        let log = self.groups.get(&group)?;
        Some((*log.first_key_value()?.0, *log.last_key_value()?.0))
    }
}

/// Checks that `ops` keep every group's entries contiguous, given what the index holds.
fn check_ops(index: &Index, ops: &[LogOp<'_>]) -> Result<(), StorageError> {
    // (first, last) of each group touched, as the ops so far leave it.
    let mut bounds: HashMap<GroupId, Option<(u64, u64)>> = HashMap::new();
    for op in ops {
        match *op {
            LogOp::Append { group, entries } => {
                let current = *bounds.entry(group).or_insert_with(|| index.bounds(group));
                let mut last = current.map(|(_, last)| last);
                for (entry, _) in entries {
                    if entry.0 == u64::MAX {
                        return Err(StorageError::corrupt(
                            format!("log of group {}", group.0),
                            format!("append of entry {entry}, the last index there is"),
                        ));
                    }
                    if let Some(last) = last
                        && entry.0 != last + 1
                    {
                        return Err(StorageError::corrupt(
                            format!("log of group {}", group.0),
                            format!("append of entry {entry} where entry {} comes next", last + 1),
                        ));
                    }
                    last = Some(entry.0);
                }
                if let (Some(last), Some((first, _))) = (last, entries.first()) {
                    let first = current.map_or(first.0, |(first, _)| first);
                    bounds.insert(group, Some((first, last)));
                }
            }
            LogOp::TruncateFrom { group, from } => {
                let current = *bounds.entry(group).or_insert_with(|| index.bounds(group));
                let after =
                    current.and_then(|(first, last)| (from.0 > first).then(|| (first, last.min(from.0 - 1))));
                bounds.insert(group, after);
            }
            LogOp::PurgeThrough { group, through } => {
                let current = *bounds.entry(group).or_insert_with(|| index.bounds(group));
                let after = current
                    .and_then(|(first, last)| (through.0 < last).then(|| (first.max(through.0 + 1), last)));
                bounds.insert(group, after);
            }
            LogOp::PutMeta { .. } | LogOp::DeleteMeta { .. } => {}
        }
    }
    Ok(())
}

impl LogStore {
    /// Opens (or creates) the log in the directory `path`, replaying it.
    pub fn open(path: &Path) -> Result<LogStore, StorageError> {
        LogStore::open_with(path, LogOptions::default())
    }

    /// Opens the log of `data_dir`; a log an earlier synod kept in `raftlog.redb` is moved
    /// into it first. The move is marked by a `MIGRATING` file until the moved log says it
    /// is whole: a move cut short by a crash starts over from no segments at all.
    pub fn open_in(data_dir: &crate::DataDir) -> Result<LogStore, StorageError> {
        let path = data_dir.log_path();
        let legacy = data_dir.legacy_log_path();
        if !legacy.exists() {
            return LogStore::open(&path);
        }
        let marker = path.join(MIGRATING_FILE);
        if marker.exists() {
            let dir = FsDir::open(&path)?;
            for name in dir.list().map_err(io_error(path.clone()))? {
                if parse_segment_name(&name).is_some() || name.ends_with(".log.tmp") {
                    dir.remove(&name).map_err(io_error(dir.path_of(&name)))?;
                }
            }
            dir.sync().map_err(io_error(path.clone()))?;
        }
        let store = LogStore::open(&path)?;
        if store.meta(MIGRATED_META)?.is_none() {
            if !store.is_empty() {
                return Err(StorageError::Layout(format!(
                    "{} holds a log, and {} is an older one beside it: keep one (move the other away)",
                    path.display(),
                    legacy.display()
                )));
            }
            std::fs::File::create(&marker)
                .and_then(|_| std::fs::File::open(&path)?.sync_all())
                .map_err(io_error(marker.clone()))?;
            let contents = crate::legacy_log::read(&legacy)?;
            for (key, value) in &contents.meta {
                store.put_meta(key, value)?;
            }
            for (group, entries) in &contents.groups {
                for chunk in entries.chunks(1024) {
                    let chunk: Vec<(LogIndex, &[u8])> =
                        chunk.iter().map(|(i, e)| (*i, e.as_slice())).collect();
                    store.write(&[LogOp::Append { group: *group, entries: &chunk }])?;
                }
            }
            store.put_meta(MIGRATED_META, b"")?;
            tracing::info!(from = %legacy.display(), to = %path.display(), "moved the log to the segmented log");
        }
        if marker.exists() {
            std::fs::remove_file(&marker)
                .and_then(|()| std::fs::File::open(&path)?.sync_all())
                .map_err(io_error(marker.clone()))?;
        }
        let done = legacy.with_extension("redb.migrated");
        std::fs::rename(&legacy, &done).map_err(io_error(legacy.clone()))?;
        Ok(store)
    }

    pub fn open_with(path: &Path, options: LogOptions) -> Result<LogStore, StorageError> {
        let dir = FsDir::open(path)?;
        LogStore::open_on_with(dir, path.to_path_buf(), options)
    }

    /// Opens the log in a directory other than a real one (a simulated disk in tests).
    pub fn open_on(dir: impl LogDir, name: &str) -> Result<LogStore, StorageError> {
        let options =
            LogOptions { segment_bytes: 1 << 20, prepare_in_background: false, ..LogOptions::default() };
        LogStore::open_on_with(dir, PathBuf::from(name), options)
    }

    pub fn open_on_with(
        dir: impl LogDir,
        path: PathBuf,
        options: LogOptions,
    ) -> Result<LogStore, StorageError> {
        let dir: Arc<dyn LogDir> = Arc::new(dir);
        let mut sequences = Vec::new();
        let mut removed_preparing = false;
        for name in dir.list().map_err(io_error(path.clone()))? {
            if name.ends_with(".log.tmp") {
                // A segment being prepared when the process stopped: never used.
                dir.remove(&name).map_err(io_error(dir.path_of(&name)))?;
                removed_preparing = true;
            } else if let Some(sequence) = parse_segment_name(&name) {
                sequences.push(sequence);
            }
        }
        if removed_preparing {
            dir.sync().map_err(io_error(path.clone()))?;
        }
        sequences.sort_unstable();
        let mut index = Index::default();
        let writer = match sequences.last() {
            None => {
                let file = prepare_segment(dir.as_ref(), 1, options.segment_bytes)
                    .map_err(io_error(dir.path_of(&preparing_name(1))))?;
                dir.rename(&preparing_name(1), &segment_name(1))
                    .map_err(io_error(dir.path_of(&segment_name(1))))?;
                dir.sync().map_err(io_error(path.clone()))?;
                index.segments.insert(1, Segment { file: file.clone(), live: 0, live_bytes: 0 });
                Writer {
                    sequence: 1,
                    file,
                    offset: SEGMENT_HEADER_BYTES,
                    capacity: options.segment_bytes,
                    next: None,
                    failed: None,
                    collection_blocked: false,
                }
            }
            Some(&newest) => {
                if let Some(pair) = sequences.windows(2).find(|pair| pair[1] != pair[0] + 1) {
                    // Segments are removed oldest first: one missing in the middle took
                    // records (truncations, purges) the others depend on.
                    return Err(StorageError::corrupt(
                        format!("log in {}", path.display()),
                        format!("segment {} is missing between {} and {}", pair[0] + 1, pair[0], pair[1]),
                    ));
                }
                let max_bytes = options
                    .segment_bytes
                    .max(SEGMENT_HEADER_BYTES + log_format::record_bytes(MAX_RECORD_BYTES as usize));
                let mut end = SEGMENT_HEADER_BYTES;
                let mut newest_file = None;
                for &sequence in &sequences {
                    let (file, segment_end) =
                        replay(dir.as_ref(), &mut index, sequence, sequence == newest, max_bytes)?;
                    if sequence == newest {
                        end = segment_end;
                        newest_file = Some(file);
                    }
                }
                let file = newest_file.expect("the newest segment was replayed");
                let capacity = file.size().map_err(io_error(dir.path_of(&segment_name(newest))))?;
                Writer {
                    sequence: newest,
                    file,
                    offset: end,
                    capacity,
                    next: None,
                    failed: None,
                    collection_blocked: false,
                }
            }
        };
        for (group, log) in &index.groups {
            if let (Some((&first, _)), Some((&last, _))) = (log.first_key_value(), log.last_key_value())
                && last - first + 1 != log.len() as u64
            {
                return Err(StorageError::corrupt(
                    format!("log of group {} in {}", group.0, path.display()),
                    format!("entries {first} to {last} have holes after replay"),
                ));
            }
        }
        let store = LogStore { dir, path, options, writer: Mutex::new(writer), index: RwLock::new(index) };
        if let Err(error) = store.collect_garbage(&mut lock(&store.writer)) {
            tracing::warn!(error = %error, "old log segments not collected at open");
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `entries` (contiguous, following the group's last entry) and purges entries
    /// up to and including `purge_through`, in one durable write.
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
        self.write(&ops)
    }

    /// Removes the group's entries from `from` on (a conflicting suffix), durably.
    pub fn truncate_from(&self, group: GroupId, from: LogIndex) -> Result<(), StorageError> {
        self.write(&[LogOp::TruncateFrom { group, from }])
    }

    /// Writes `ops`, in order, as one record, and makes it durable with one fdatasync:
    /// after it returns, all of them survive any crash; if it fails, none or all of them
    /// may.
    pub fn write(&self, ops: &[LogOp<'_>]) -> Result<(), StorageError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut writer = lock(&self.writer);
        if let Some(error) = &writer.failed {
            return Err(StorageError::Failed(error.clone()));
        }
        check_ops(&read_lock(&self.index), ops)?;
        let mut payload = PayloadWriter::new();
        for op in ops {
            payload
                .push(op)
                .map_err(|e| StorageError::corrupt(format!("a write to {}", self.path.display()), e))?;
        }
        if payload.len() as u64 > MAX_RECORD_BYTES {
            return Err(StorageError::corrupt(
                format!("a write to {}", self.path.display()),
                format!("{} bytes in one write; at most {MAX_RECORD_BYTES}", payload.len()),
            ));
        }
        self.write_payload(&mut writer, payload)?;
        // The write is durable: what collecting old segments runs into is for the log, not
        // for the caller (it is tried again once the next segment starts).
        if !writer.collection_blocked
            && let Err(error) = self.collect_garbage(&mut writer)
        {
            tracing::warn!(error = %error, "old log segments not collected; trying again with the next segment");
            writer.collection_blocked = true;
        }
        Ok(())
    }

    /// Writes one record durably and applies it to the index.
    fn write_payload(&self, writer: &mut Writer, payload: PayloadWriter) -> Result<(), StorageError> {
        let payload_len = payload.len();
        let record_bytes = log_format::record_bytes(payload_len);
        if writer.offset + record_bytes > writer.capacity {
            self.rotate(writer, SEGMENT_HEADER_BYTES + record_bytes)
                .inspect_err(|e| writer.failed = Some(e.to_string()))?;
        }
        let offset = writer.offset;
        let record = payload.into_record(writer.sequence, offset);
        let path = self.dir.path_of(&segment_name(writer.sequence));
        let written = writer.file.write_at(offset, &record).and_then(|()| writer.file.sync_data());
        if let Err(source) = written {
            let error = StorageError::Io { path, source };
            writer.failed = Some(error.to_string());
            return Err(error);
        }
        writer.offset += record_bytes;
        let header = log_format::RECORD_HEADER_BYTES as usize;
        let payload = &record[header..header + payload_len];
        let payload_offset = offset + log_format::RECORD_HEADER_BYTES;
        write_lock(&self.index).apply(writer.sequence, payload_offset, payload).map_err(|e| {
            // What was just made durable does not apply: nothing more may follow it.
            writer.failed = Some(e.clone());
            StorageError::corrupt(path.display().to_string(), e)
        })
    }

    /// Moves the writer to a new segment of at least `bytes`, once everything in the
    /// current one is durable (it is: every record is synced before the write returns).
    fn rotate(&self, writer: &mut Writer, bytes: u64) -> Result<(), StorageError> {
        let sequence = writer.sequence + 1;
        let name = segment_name(sequence);
        let prepared = match writer.next.take() {
            Some(Preparing::Thread(thread)) => {
                thread.join().unwrap_or_else(|_| Err(std::io::Error::other("the segment preparer panicked")))
            }
            Some(Preparing::Ready(file)) => file,
            None => prepare_segment(self.dir.as_ref(), sequence, self.options.segment_bytes.max(bytes)),
        };
        let mut file = prepared.map_err(io_error(self.dir.path_of(&preparing_name(sequence))))?;
        let mut capacity = file.size().map_err(io_error(self.dir.path_of(&preparing_name(sequence))))?;
        if capacity < bytes {
            // A record larger than a segment: a segment of its own size.
            file = prepare_segment(self.dir.as_ref(), sequence, bytes)
                .map_err(io_error(self.dir.path_of(&preparing_name(sequence))))?;
            capacity = bytes;
        }
        self.dir.rename(&preparing_name(sequence), &name).map_err(io_error(self.dir.path_of(&name)))?;
        self.dir.sync().map_err(io_error(self.path.clone()))?;
        write_lock(&self.index)
            .segments
            .insert(sequence, Segment { file: file.clone(), live: 0, live_bytes: 0 });
        *writer = Writer {
            sequence,
            file,
            offset: SEGMENT_HEADER_BYTES,
            capacity,
            next: None,
            failed: None,
            collection_blocked: false,
        };
        let (dir, next, bytes) = (self.dir.clone(), sequence + 1, self.options.segment_bytes);
        writer.next = Some(if self.options.prepare_in_background {
            Preparing::Thread(
                std::thread::Builder::new()
                    .name("synod-log-prepare".into())
                    .spawn(move || prepare_segment(dir.as_ref(), next, bytes))
                    .map_err(io_error(self.path.clone()))?,
            )
        } else {
            Preparing::Ready(prepare_segment(dir.as_ref(), next, bytes))
        });
        Ok(())
    }

    /// Removes the oldest segments while nothing in them is live. When the oldest of more
    /// than two still holds a little that is live, and that fits in the active segment,
    /// copies it there first (at most once per call, so a write pays for one rewrite at
    /// most; each rewrite removes a segment and adds none, so this ends).
    fn collect_garbage(&self, writer: &mut Writer) -> Result<(), StorageError> {
        let mut rewritten = false;
        loop {
            let (oldest, live, live_bytes, count) = {
                let index = read_lock(&self.index);
                let Some((&oldest, segment)) = index.segments.first_key_value() else { return Ok(()) };
                (oldest, segment.live, segment.live_bytes, index.segments.len())
            };
            if oldest == writer.sequence {
                return Ok(());
            }
            if live > 0 {
                let small =
                    (live_bytes as f64) <= self.options.segment_bytes as f64 * self.options.rewrite_below;
                // Room in the active segment for the items and their framing (a length per
                // entry, an op per run of entries, a key per meta value: a generous 48 bytes
                // each). Were it too little, the rewrite would start a segment: no loop, as
                // there is one rewrite per call, but no gain either.
                let fits = writer.offset + live_bytes + 48 * live + 64 <= writer.capacity;
                if rewritten || count <= 2 || !small || !fits {
                    return Ok(());
                }
                self.rewrite(writer, oldest)?;
                rewritten = true;
                continue;
            }
            let name = segment_name(oldest);
            match self.dir.remove(&name) {
                // Removed before a failed directory sync.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                removed => removed.map_err(io_error(self.dir.path_of(&name)))?,
            }
            // Durable before the next removal: the files left are always a suffix.
            self.dir.sync().map_err(io_error(self.path.clone()))?;
            write_lock(&self.index).segments.remove(&oldest);
        }
    }

    /// Copies everything live in segment `sequence` into the active segment, in one record.
    fn rewrite(&self, writer: &mut Writer, sequence: u64) -> Result<(), StorageError> {
        let mut payload = PayloadWriter::new();
        let (runs, meta, files) = {
            let index = read_lock(&self.index);
            let mut runs: Vec<(GroupId, u64, Vec<Location>)> = Vec::new();
            for (group, log) in &index.groups {
                for (&entry, location) in log.iter().filter(|(_, l)| l.segment == sequence) {
                    match runs.last_mut() {
                        Some((g, first, run)) if g == group && *first + run.len() as u64 == entry => {
                            run.push(*location)
                        }
                        _ => runs.push((*group, entry, vec![*location])),
                    }
                }
            }
            let meta: Vec<(String, Vec<u8>)> = index
                .meta
                .iter()
                .filter(|(_, m)| m.segment == sequence)
                .map(|(key, m)| (key.clone(), m.value.clone()))
                .collect();
            let files = index.files(runs.iter().flat_map(|(_, _, run)| run));
            (runs, meta, files)
        };
        for (group, first, run) in runs {
            let bytes = self.read_locations(&files, &run)?;
            payload
                .push_rewrite(group, LogIndex(first), bytes.iter().map(Vec::as_slice))
                .map_err(|e| StorageError::corrupt(self.path.display().to_string(), e))?;
        }
        for (key, value) in &meta {
            payload
                .push(&LogOp::PutMeta { key, value })
                .map_err(|e| StorageError::corrupt(self.path.display().to_string(), e))?;
        }
        tracing::debug!(segment = sequence, "rewriting the live entries of an old log segment forward");
        self.write_payload(writer, payload)
    }

    /// The bytes at `locations`, each checked against its CRC, read through `files` (taken
    /// with the locations, under one lock: a segment removed since stays readable through
    /// its open file).
    fn read_locations(
        &self,
        files: &HashMap<u64, Arc<dyn LogFile>>,
        locations: &[Location],
    ) -> Result<Vec<Vec<u8>>, StorageError> {
        let mut out = Vec::with_capacity(locations.len());
        let mut i = 0;
        while i < locations.len() {
            // Neighbours in one segment (one record's entries) are read with one call.
            let start = locations[i];
            let mut end = i + 1;
            while end < locations.len()
                && locations[end].segment == start.segment
                && locations[end].offset >= locations[end - 1].offset + u64::from(locations[end - 1].len)
                && locations[end].offset - (locations[end - 1].offset + u64::from(locations[end - 1].len))
                    <= 64
                && locations[end].offset + u64::from(locations[end].len) - start.offset <= 4 << 20
            {
                end += 1;
            }
            let last = locations[end - 1];
            let span = (last.offset + u64::from(last.len) - start.offset) as usize;
            let mut buffer = vec![0u8; span];
            let name = segment_name(start.segment);
            let file = files.get(&start.segment).ok_or_else(|| {
                StorageError::corrupt(self.path.display().to_string(), format!("segment {name} is gone"))
            })?;
            file.read_at(start.offset, &mut buffer).map_err(io_error(self.dir.path_of(&name)))?;
            for location in &locations[i..end] {
                let at = (location.offset - start.offset) as usize;
                let bytes = &buffer[at..at + location.len as usize];
                if crc32fast::hash(bytes) != location.crc {
                    return Err(StorageError::corrupt(
                        self.dir.path_of(&name).display().to_string(),
                        format!("the entry at offset {} changed since it was written", location.offset),
                    ));
                }
                out.push(bytes.to_vec());
            }
            i = end;
        }
        Ok(out)
    }

    /// The first and last index the group's log holds, if any.
    pub fn bounds(&self, group: GroupId) -> Result<Option<(LogIndex, LogIndex)>, StorageError> {
        Ok(read_lock(&self.index).bounds(group).map(|(first, last)| (LogIndex(first), LogIndex(last))))
    }

    /// The entries with indexes in `range`, in order, each checked against its checksum.
    /// Entries may be missing at the start of the range (purged, or never written).
    pub fn entries(
        &self,
        group: GroupId,
        range: Range<LogIndex>,
    ) -> Result<Vec<(LogIndex, Vec<u8>)>, StorageError> {
        if range.start >= range.end {
            return Ok(Vec::new());
        }
        let (located, files) = {
            let index = read_lock(&self.index);
            let located: Vec<(u64, Location)> = match index.groups.get(&group) {
                Some(log) => log.range(range.start.0..range.end.0).map(|(i, l)| (*i, *l)).collect(),
                None => return Ok(Vec::new()),
            };
            let files = index.files(located.iter().map(|(_, l)| l));
            (located, files)
        };
        let locations: Vec<Location> = located.iter().map(|(_, l)| *l).collect();
        let bytes = self.read_locations(&files, &locations)?;
        Ok(located.into_iter().zip(bytes).map(|((index, _), bytes)| (LogIndex(index), bytes)).collect())
    }

    /// A durable metadata value.
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(read_lock(&self.index).meta.get(key).map(|m| m.value.clone()))
    }

    /// Stores a metadata value durably.
    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.write(&[LogOp::PutMeta { key, value }])
    }

    /// Removes a metadata value durably (nothing happens if there is none).
    pub fn delete_meta(&self, key: &str) -> Result<(), StorageError> {
        self.write(&[LogOp::DeleteMeta { key }])
    }

    fn is_empty(&self) -> bool {
        let index = read_lock(&self.index);
        index.meta.is_empty() && index.groups.values().all(BTreeMap::is_empty)
    }

    /// The segment files, oldest first (for tests and tools).
    pub fn segments(&self) -> Vec<PathBuf> {
        read_lock(&self.index).segments.keys().map(|s| self.dir.path_of(&segment_name(*s))).collect()
    }
}

impl Drop for LogStore {
    fn drop(&mut self) {
        // The segment being prepared holds the directory, and so its lock: it finishes
        // first, so that the log opens again as soon as this value is gone.
        if let Some(Preparing::Thread(thread)) = lock(&self.writer).next.take() {
            let _ = thread.join();
        }
    }
}

/// Replays segment `sequence` into `index`; returns its file and where its records end.
fn replay(
    dir: &dyn LogDir,
    index: &mut Index,
    sequence: u64,
    newest: bool,
    max_bytes: u64,
) -> Result<(Arc<dyn LogFile>, u64), StorageError> {
    let name = segment_name(sequence);
    let path = dir.path_of(&name);
    let file = dir.open(&name).map_err(io_error(path.clone()))?;
    let len = file.size().map_err(io_error(path.clone()))?;
    let damaged = |offset: u64, detail: String| {
        StorageError::corrupt(format!("log file {}", path.display()), format!("at offset {offset}: {detail}"))
    };
    if len > max_bytes {
        return Err(damaged(
            0,
            format!("{len} bytes, larger than any segment this log writes ({max_bytes})"),
        ));
    }
    let mut bytes = vec![0u8; len as usize];
    file.read_at(0, &mut bytes).map_err(io_error(path.clone()))?;
    log_format::check_segment_header(&bytes, sequence).map_err(|e| damaged(0, e))?;
    index.segments.insert(sequence, Segment { file: file.clone(), live: 0, live_bytes: 0 });
    let mut offset = SEGMENT_HEADER_BYTES;
    loop {
        let why = match log_format::frame_at(&bytes, sequence, offset) {
            Frame::Record { payload, next } => {
                index
                    .apply(sequence, offset + log_format::RECORD_HEADER_BYTES, payload)
                    .map_err(|e| damaged(offset, e))?;
                offset = next;
                continue;
            }
            Frame::End => None,
            Frame::Bad(why) => Some(why),
        };
        match next_record(&bytes, sequence, offset + log_format::ALIGN) {
            Ok(Some(found)) => {
                let what = why.unwrap_or_else(|| "no record here".into());
                return Err(damaged(offset, format!("{what}, but a valid record follows at offset {found}")));
            }
            Ok(None) => {}
            Err(budget) => return Err(damaged(offset, format!("{budget} after the last valid record"))),
        }
        if let Some(why) = why {
            if !newest {
                return Err(damaged(offset, format!("{why}, in a segment older than the newest")));
            }
            if !has_unwritten_sector(&bytes, offset) {
                return Err(damaged(
                    offset,
                    format!("{why}, and every sector of it was written (not a torn write)"),
                ));
            }
            // The write a crash cut short: never acknowledged, so it goes.
            tracing::warn!(file = %path.display(), offset, reason = %why, "cutting off a torn record at the end of the log");
        }
        if newest {
            // Whatever a cut-short write left after the last record (even with its first
            // sector unwritten, so that it reads as the end) is zeroed before new records
            // go there: left in place, it would read as damage once they end short of it.
            let garbage_end = bytes.iter().rposition(|b| *b != 0).map_or(0, |last| last as u64 + 1);
            if garbage_end > offset {
                let zeros = vec![0u8; (garbage_end - offset) as usize];
                file.write_at(offset, &zeros)
                    .and_then(|()| file.sync_data())
                    .map_err(io_error(path.clone()))?;
            }
        }
        return Ok((file, offset));
    }
}

/// The unit a disk writes whole: a write cut short by a crash leaves some of its sectors
/// unwritten (zero, in a zero-filled segment), never part of one.
const SECTOR: usize = 512;

/// Whether a 512-byte sector of the file that the record at `offset` covers (as far as its
/// length says) is all zeros: a sector a crash kept the write from reaching, in a
/// zero-filled segment (etcd's torn-write test). A record damaged after it was written has
/// none: each of its sectors holds some of its bytes or of its neighbour's.
fn has_unwritten_sector(bytes: &[u8], offset: u64) -> bool {
    let start = offset as usize;
    let Some(header) = bytes.get(start..start + log_format::RECORD_HEADER_BYTES as usize) else {
        return true;
    };
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let end = (start + log_format::RECORD_HEADER_BYTES as usize).saturating_add(len).min(bytes.len());
    let mut sector = start / SECTOR * SECTOR;
    while sector < end {
        let whole = &bytes[sector..(sector + SECTOR).min(bytes.len())];
        if whole.iter().all(|b| *b == 0) {
            return true;
        }
        sector += SECTOR;
    }
    false
}

/// The offset of the first valid record at or after `from`, if any; an error when the
/// bytes there would take more checksum work than a torn write can explain (random bytes
/// look like records of every length).
fn next_record(bytes: &[u8], sequence: u64, from: u64) -> Result<Option<u64>, String> {
    /// Bytes of checksums computed looking, at most: a torn write leaves one record's
    /// worth of leftovers, and records are bounded by `MAX_RECORD_BYTES`.
    const BUDGET: u64 = 4 * MAX_RECORD_BYTES;
    let mut spent = 0u64;
    let mut offset = from;
    while offset + log_format::RECORD_HEADER_BYTES <= bytes.len() as u64 {
        // A record starts with a non-zero length: skip the zeros (most of a segment's
        // unused end) in one pass rather than eight bytes at a time.
        let Some(nonzero) = bytes[offset as usize..].iter().position(|b| *b != 0) else { return Ok(None) };
        offset += nonzero as u64 / log_format::ALIGN * log_format::ALIGN;
        let at = offset as usize;
        if let Some(header) = bytes.get(at..at + 4) {
            let len = u64::from(u32::from_le_bytes(header.try_into().expect("4 bytes")));
            if offset + log_format::RECORD_HEADER_BYTES + len <= bytes.len() as u64 {
                spent += len;
                if spent > BUDGET {
                    return Err("too many bytes that are neither zeros nor records".into());
                }
            }
        }
        if let Frame::Record { .. } = log_format::frame_at(bytes, sequence, offset) {
            return Ok(Some(offset));
        }
        offset += log_format::ALIGN;
    }
    Ok(None)
}
