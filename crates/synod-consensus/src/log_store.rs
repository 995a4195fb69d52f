//! [`RaftLog`]: openraft's log storage on synod's `LogStore` (the segmented log).
//!
//! One writer owns every write to the log file: a thread of its own in a server, a task in
//! the simulator (`DiskIo`). An `append` hands its entries to it and returns at once
//! (openraft may replicate them to followers while the local fsync is in flight); the
//! writer folds everything queued into one record and one fsync (group commit), then
//! reports each append flushed, in order. Votes, truncations and purges go through the same
//! queue, so no write can become durable before an earlier one, and wait until they are
//! durable, as openraft requires.
//!
//! The tail of the log stays in memory (`Tail`): appended entries are readable the moment
//! `append` returns, before they reach the file, and replication reads recent entries
//! without decoding them from disk.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{OptionalSend, entry::RaftEntry};
use prost::Message;
use synod_api::synodpb as pb;
use synod_base::{GroupId, LogIndex};
use synod_storage::{LogOp, LogStore};
use tokio::sync::{mpsc, oneshot};

use crate::codec;
use crate::disk_io::DiskIo;
use crate::types::{Entry, LogId, TypeConfig, Vote};

/// Told the duration and entry count of every durable log write, for metrics.
pub type FlushObserver = Arc<dyn Fn(std::time::Duration, usize) + Send + Sync>;

/// Entries kept in memory behind the newest flushed one, for replication to read.
const TAIL_FLUSHED_MAX: usize = 4096;
/// Writes waiting for the writer; openraft sends at most a few at a time.
const QUEUE_MAX: usize = 1024;

pub(crate) fn vote_key(group: GroupId) -> String {
    format!("raft/vote/{}", group.0)
}
fn committed_key(group: GroupId) -> String {
    format!("raft/committed/{}", group.0)
}
fn purged_key(group: GroupId) -> String {
    format!("raft/purged/{}", group.0)
}

fn io_error(error: impl std::fmt::Display) -> io::Error {
    io::Error::other(error.to_string())
}

/// The newest entries, flushed or not. Whatever is here is the newest version of its index.
#[derive(Default)]
struct Tail {
    entries: BTreeMap<u64, Entry>,
    /// Entries up to here are in the file (as far as this tail knows).
    flushed_through: u64,
    /// Bumped by every truncation: a flush of entries appended before a truncation says
    /// nothing about the entries appended after it at the same indexes.
    epoch: u64,
}

impl Tail {
    fn trim(&mut self) {
        while self.entries.len() > TAIL_FLUSHED_MAX {
            match self.entries.first_key_value() {
                Some((&first, _)) if first <= self.flushed_through => {
                    self.entries.pop_first();
                }
                _ => break,
            }
        }
    }
}

/// A write for the writer.
enum Write {
    Append { entries: Vec<(u64, Vec<u8>)>, last: u64, epoch: u64, callback: IOFlushed<TypeConfig> },
    Other { ops: Vec<OwnedOp>, done: oneshot::Sender<Result<(), String>> },
}

enum OwnedOp {
    TruncateFrom(u64),
    PurgeThrough(u64),
    PutMeta(String, Vec<u8>),
}

struct Inner {
    group: GroupId,
    store: Arc<LogStore>,
    tail: Mutex<Tail>,
    vote: Mutex<Option<Vote>>,
    purged: Mutex<Option<LogId>>,
    /// The newest committed log id openraft reported, until a write carries it to the file.
    committed: Mutex<Option<LogId>>,
    queue: mpsc::Sender<Write>,
}

/// openraft's log storage and log reader for one consensus group.
#[derive(Clone)]
pub struct RaftLog {
    inner: Arc<Inner>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl RaftLog {
    /// Opens the group's log on `store` and starts its writer where `disk_io` says.
    pub fn open(
        store: Arc<LogStore>,
        group: GroupId,
        observer: Option<FlushObserver>,
        disk_io: DiskIo,
    ) -> io::Result<RaftLog> {
        let vote = store.meta(&vote_key(group)).map_err(io_error)?;
        let vote = codec::decode_vote(vote.as_deref()).map_err(io_error)?;
        let purged = store.meta(&purged_key(group)).map_err(io_error)?;
        let purged = codec::decode_log_id(purged.as_deref()).map_err(io_error)?;
        let flushed_through = store.bounds(group).map_err(io_error)?.map_or(0, |(_, last)| last.0);
        let (queue, mut writes) = mpsc::channel(QUEUE_MAX);
        let inner = Arc::new(Inner {
            group,
            store: store.clone(),
            tail: Mutex::new(Tail { entries: BTreeMap::new(), flushed_through, epoch: 0 }),
            vote: Mutex::new(vote),
            purged: Mutex::new(purged),
            committed: Mutex::new(None),
            queue,
        });
        let last_index = store.bounds(group).map_err(io_error)?.map(|(_, last)| last.0);
        let mut writer =
            Writer { store, group, inner: Arc::downgrade(&inner), observer, failed: None, last_index };
        match disk_io {
            DiskIo::Threads => {
                std::thread::Builder::new().name(format!("synod-raft-log-{}", group.0)).spawn(move || {
                    while let Some(first) = writes.blocking_recv() {
                        writer.write(take_batch(first, &mut writes));
                    }
                })?;
            }
            DiskIo::Inline => {
                tokio::spawn(async move {
                    while let Some(first) = writes.recv().await {
                        writer.write(take_batch(first, &mut writes));
                    }
                });
            }
        }
        Ok(RaftLog { inner })
    }

    fn decode(index: u64, bytes: &[u8]) -> io::Result<Entry> {
        let entry = pb::Entry::decode(bytes).map_err(|e| io_error(format!("log entry {index}: {e}")))?;
        let entry = codec::entry_from(entry).map_err(|e| io_error(format!("log entry {index}: {e}")))?;
        if entry.log_id.index != index {
            return Err(io_error(format!("log entry stored at {index} says it is {}", entry.log_id.index)));
        }
        Ok(entry)
    }

    fn entries_in(&self, start: u64, end: u64) -> io::Result<Vec<Entry>> {
        if start >= end {
            return Ok(Vec::new());
        }
        let tail: BTreeMap<u64, Entry> =
            lock(&self.inner.tail).entries.range(start..end).map(|(i, e)| (*i, e.clone())).collect();
        let from_file_end = tail.first_key_value().map_or(end, |(first, _)| *first);
        let mut out = Vec::new();
        if start < from_file_end {
            let stored = self.inner.store.entries(self.inner.group, LogIndex(start)..LogIndex(from_file_end));
            for (index, bytes) in stored.map_err(io_error)? {
                out.push(RaftLog::decode(index.0, &bytes)?);
            }
            // Entries purged from the front may be missing; none may be missing after them.
            if let (Some(last), true) = (out.last(), !tail.is_empty())
                && last.log_id.index + 1 != from_file_end
            {
                return Err(io_error(format!(
                    "log hole between entry {} and the in-memory tail at {from_file_end}",
                    last.log_id.index
                )));
            }
        }
        out.extend(tail.into_values());
        Ok(out)
    }

    /// Queues `ops` for the writer and waits until they are durable.
    async fn write_and_wait(&self, ops: Vec<OwnedOp>) -> io::Result<()> {
        let (done, outcome) = oneshot::channel();
        self.inner
            .queue
            .send(Write::Other { ops, done })
            .await
            .map_err(|_| io_error("the log writer has stopped"))?;
        outcome.await.map_err(|_| io_error("the log writer has stopped"))?.map_err(io_error)
    }
}

/// The first queued write and every other one already waiting: one record, one fsync.
fn take_batch(first: Write, writes: &mut mpsc::Receiver<Write>) -> Vec<Write> {
    let mut batch = vec![first];
    while batch.len() < QUEUE_MAX {
        match writes.try_recv() {
            Ok(write) => batch.push(write),
            Err(_) => break,
        }
    }
    batch
}

/// The log's one writer.
struct Writer {
    store: Arc<LogStore>,
    group: GroupId,
    inner: std::sync::Weak<Inner>,
    observer: Option<FlushObserver>,
    /// The first failure: every later write fails with it, so nothing lands after a gap.
    failed: Option<String>,
    /// The index of the last entry in the file, as far as the writes so far tell.
    last_index: Option<u64>,
}

impl Writer {
    /// Writes `batch` durably (as far as its writes ask) and reports each write done.
    fn write(&mut self, batch: Vec<Write>) {
        let started = std::time::Instant::now();
        let last_after = batch.iter().fold(self.last_index, |last, write| match write {
            Write::Append { last, .. } => Some(*last),
            Write::Other { ops, .. } => ops.iter().fold(last, |last, op| match op {
                OwnedOp::TruncateFrom(from) => last.filter(|_| *from > 0).map(|l| l.min(from - 1)),
                _ => last,
            }),
        });
        // The committed id goes with the first write after which the file holds its entry.
        let committed = self.inner.upgrade().and_then(|inner| {
            let mut committed = lock(&inner.committed);
            match *committed {
                Some(id) if last_after.is_some_and(|last| id.index <= last) => committed.take(),
                _ => None,
            }
        });
        let committed = committed.map(|id| codec::log_id(&id).encode_to_vec());
        let outcome = match &self.failed {
            Some(error) => Err(error.clone()),
            None => write_batch(&self.store, self.group, &batch, committed).map_err(|e| e.to_string()),
        };
        if let Some(observe) = &self.observer {
            let entries = batch
                .iter()
                .map(|w| if let Write::Append { entries, .. } = w { entries.len() } else { 0 })
                .sum();
            observe(started.elapsed(), entries);
        }
        if outcome.is_ok() {
            self.last_index = last_after;
        }
        if let Err(error) = &outcome {
            if self.failed.is_none() {
                tracing::error!(error = %error, "log write failed; the group stops");
            }
            self.failed = Some(error.clone());
        }
        let mut flushed_through = None;
        for write in batch {
            match write {
                Write::Append { last, epoch, callback, .. } => {
                    if outcome.is_ok() {
                        flushed_through = Some((last, epoch));
                    }
                    callback.io_completed(outcome.clone().map_err(io_error));
                }
                Write::Other { done, .. } => {
                    let _ = done.send(outcome.clone());
                }
            }
        }
        if let (Some((last, epoch)), Some(inner)) = (flushed_through, self.inner.upgrade()) {
            let mut tail = lock(&inner.tail);
            if tail.epoch == epoch {
                tail.flushed_through = tail.flushed_through.max(last);
                tail.trim();
            }
        }
    }
}

/// Writes `batch` as one durable record, with the committed log id openraft last
/// reported, if any, after everything in it.
fn write_batch(
    store: &LogStore,
    group: GroupId,
    batch: &[Write],
    committed: Option<Vec<u8>>,
) -> Result<(), synod_storage::StorageError> {
    let mut ops: Vec<LogOp<'_>> = Vec::new();
    let committed_key = committed_key(group);
    let appends: Vec<Vec<(LogIndex, &[u8])>> = batch
        .iter()
        .map(|write| match write {
            Write::Append { entries, .. } => {
                entries.iter().map(|(i, bytes)| (LogIndex(*i), bytes.as_slice())).collect()
            }
            Write::Other { .. } => Vec::new(),
        })
        .collect();
    for (write, append) in batch.iter().zip(&appends) {
        match write {
            Write::Append { .. } => ops.push(LogOp::Append { group, entries: append }),
            Write::Other { ops: owned, .. } => {
                for op in owned {
                    ops.push(match op {
                        OwnedOp::TruncateFrom(from) => LogOp::TruncateFrom { group, from: LogIndex(*from) },
                        OwnedOp::PurgeThrough(through) => {
                            LogOp::PurgeThrough { group, through: LogIndex(*through) }
                        }
                        OwnedOp::PutMeta(key, value) => LogOp::PutMeta { key, value },
                    });
                }
            }
        }
    }
    if let Some(committed) = &committed {
        ops.push(LogOp::PutMeta { key: &committed_key, value: committed });
    }
    store.write(&ops)
}

impl RaftLogReader<TypeConfig> for RaftLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(e) => e + 1,
            Bound::Excluded(e) => *e,
            Bound::Unbounded => u64::MAX,
        };
        self.entries_in(start, end)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(*lock(&self.inner.vote))
    }
}

impl RaftLogStorage<TypeConfig> for RaftLog {
    type LogReader = RaftLog;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let purged = *lock(&self.inner.purged);
        let last_in_tail = lock(&self.inner.tail).entries.last_key_value().map(|(_, e)| e.log_id);
        let last = match last_in_tail {
            Some(last) => Some(last),
            None => match self.inner.store.bounds(self.inner.group).map_err(io_error)? {
                Some((_, last)) => {
                    let bytes = self
                        .inner
                        .store
                        .entries(self.inner.group, last..LogIndex(last.0 + 1))
                        .map_err(io_error)?;
                    let (index, bytes) =
                        bytes.into_iter().next().ok_or_else(|| io_error("last log entry vanished"))?;
                    Some(RaftLog::decode(index.0, &bytes)?.log_id)
                }
                None => purged,
            },
        };
        Ok(LogState { last_purged_log_id: purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let bytes = codec::vote(vote).encode_to_vec();
        self.write_and_wait(vec![OwnedOp::PutMeta(vote_key(self.inner.group), bytes)]).await?;
        *lock(&self.inner.vote) = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let Some(committed) = committed else { return Ok(()) };
        // Not written on its own: the first write after which the file holds the committed
        // entry carries it (so it never names an entry the file lacks), and it becomes
        // durable with the next append. A committed index lost in a crash only means
        // replaying less at startup and learning the rest from the leader again.
        *lock(&self.inner.committed) = Some(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        let committed = self.inner.store.meta(&committed_key(self.inner.group)).map_err(io_error)?;
        codec::decode_log_id(committed.as_deref()).map_err(io_error)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let Some(last) = entries.last().map(|e| e.index()) else {
            callback.io_completed(Ok(()));
            return Ok(());
        };
        let encoded: Vec<(u64, Vec<u8>)> =
            entries.iter().map(|e| (e.index(), codec::entry(e).encode_to_vec())).collect();
        let epoch = {
            let mut tail = lock(&self.inner.tail);
            for entry in entries {
                tail.entries.insert(entry.index(), entry);
            }
            tail.epoch
        };
        self.inner
            .queue
            .send(Write::Append { entries: encoded, last, epoch, callback })
            .await
            .map_err(|_| io_error("the log writer has stopped"))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index + 1);
        {
            let mut tail = lock(&self.inner.tail);
            tail.entries.retain(|index, _| *index < from);
            tail.flushed_through = tail.flushed_through.min(from.saturating_sub(1));
            tail.epoch += 1;
        }
        self.write_and_wait(vec![OwnedOp::TruncateFrom(from)]).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        lock(&self.inner.tail).entries.retain(|index, _| *index > log_id.index);
        let bytes = codec::log_id(&log_id).encode_to_vec();
        self.write_and_wait(vec![
            OwnedOp::PurgeThrough(log_id.index),
            OwnedOp::PutMeta(purged_key(self.inner.group), bytes),
        ])
        .await?;
        *lock(&self.inner.purged) = Some(log_id);
        Ok(())
    }
}
