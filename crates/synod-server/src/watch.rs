//! etcd's Watch service, and the hub that follows the state for it.
//!
//! [`WatchHub`] observes every apply (synod-storage's `ApplyObserver`) and, while any Watch
//! stream is open, keeps the events of the most recent revisions in a ring bounded in bytes
//! (with no stream open, applies copy nothing). Each Watch stream is one task
//! that keeps, for each of its watchers, the next revision it owes it. When the store moves
//! on, the task serves each watcher from the ring, or, for a watcher that is further behind
//! than the ring reaches (a replay from a past revision, a slow client), from the stored
//! records, a bounded chunk at a time. Nothing is queued per watcher: a watcher that cannot
//! keep up only holds a revision number, so a slow client neither blocks others nor grows
//! memory; it is caught up from storage when it reads again. The stream's own outgoing
//! queue is a few responses long.
//!
//! Responses follow etcd's `v3rpc/watch.go`: the created response, events of one revision
//! never split across responses (unless the watcher asked for fragments), prev_kv looked up
//! as of the revision before the event, progress notifications, and a watcher whose start
//! revision is compacted canceled with the compaction revision.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prost::Message;
use synod_api::EtcdError;
use synod_api::etcdserverpb::watch_create_request::FilterType;
use synod_api::etcdserverpb::{
    ResponseHeader, WatchCancelRequest, WatchCreateRequest, WatchRequest, WatchResponse, watch_request,
    watch_server,
};
use synod_api::mvccpb::{Event, KeyValue, event::EventType};
use synod_base::limits;
use synod_mvcc::auth::Access;
use synod_mvcc::{Rev, StoredKv};
use synod_storage::{ApplyObserver, History};
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status, Streaming};

use crate::api::{Api, Reply, ServedByLearner};
use crate::auth::{Credentials, Guard};
use crate::errors;
use crate::pace::Pace;

/// Bytes of recent events the hub keeps in memory for all watchers to share.
const RING_BYTES_MAX: usize = 16 * 1024 * 1024;
/// About how many bytes of events one response (and one read from storage) carries.
const CHUNK_BYTES: usize = 1024 * 1024;
/// Responses a stream queues for its client before it stops producing more.
const STREAM_QUEUE: usize = 4;

/// The bytes an event occupies, roughly, for the memory bounds.
fn event_bytes(event: &Event) -> usize {
    event.kv.as_ref().map_or(0, |kv| kv.key.len() + kv.value.len()) + 48
}

/// A stored change as the watch event etcd sends: a put's record, or a delete's key with
/// the delete revision.
fn event(rev: Rev, stored: StoredKv) -> Event {
    if stored.tombstone {
        Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue { key: stored.kv.key, mod_revision: rev.main, ..Default::default() }),
            prev_kv: None,
        }
    } else {
        Event { r#type: EventType::Put as i32, kv: Some(stored.kv), prev_kv: None }
    }
}

/// The events of recent revisions: every revision in `start..=through` is here whole.
struct Ring {
    start: i64,
    through: i64,
    revisions: VecDeque<(i64, Arc<[Event]>)>,
    bytes: usize,
}

/// Follows the state's applies for every Watch stream of this member.
pub struct WatchHub {
    ring: Mutex<Ring>,
    /// The newest applied revision, for the streams to wait on.
    revision: watch::Sender<i64>,
    /// Open Watch streams: while there are none, applies copy no events.
    streams: AtomicUsize,
}

/// Counts one open stream while it lives.
struct Open(Arc<WatchHub>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Default for WatchHub {
    fn default() -> Self {
        WatchHub::new()
    }
}

impl WatchHub {
    pub fn new() -> WatchHub {
        WatchHub {
            ring: Mutex::new(Ring { start: 1, through: 0, revisions: VecDeque::new(), bytes: 0 }),
            revision: watch::channel(0).0,
            streams: AtomicUsize::new(0),
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest revision the hub has seen applied.
    pub fn revision(&self) -> i64 {
        *self.revision.borrow()
    }

    /// Changes with every apply: for waiting until the state may have changed.
    pub(crate) fn applies(&self) -> watch::Receiver<i64> {
        self.revision.subscribe()
    }

    /// The events of revisions `from..` that `keep` accepts, from the ring, whole revisions
    /// up to about `bytes_max` bytes, with the last revision read; `None` if the ring no
    /// longer holds `from`.
    fn read(&self, from: i64, keep: &dyn Fn(&Event) -> bool, bytes_max: usize) -> Option<(Vec<Event>, i64)> {
        let ring = self.ring();
        if from < ring.start {
            return None;
        }
        let mut events = Vec::new();
        let mut bytes = 0;
        let mut through = ring.through;
        let skip = ring.revisions.partition_point(|(rev, _)| *rev < from);
        for (rev, revision_events) in ring.revisions.iter().skip(skip) {
            if bytes >= bytes_max {
                through = rev - 1;
                break;
            }
            for event in revision_events.iter().filter(|e| keep(e)) {
                bytes += event_bytes(event);
                events.push(event.clone());
            }
        }
        Some((events, through.max(from - 1)))
    }
}

impl ApplyObserver for WatchHub {
    fn wants_changes(&self) -> bool {
        self.streams.load(Ordering::Acquire) > 0
    }

    fn applied(&self, revision: i64, changes: Option<Vec<(Rev, StoredKv)>>) {
        // Nobody watched: the ring holds nothing up to here, and a stream opened since
        // reads these revisions from storage.
        let Some(changes) = changes else {
            return self.replaced(revision);
        };
        {
            let mut ring = self.ring();
            let mut current: Option<(i64, Vec<Event>)> = None;
            let mut finished = Vec::new();
            for (rev, stored) in changes {
                match &mut current {
                    Some((main, events)) if *main == rev.main => events.push(event(rev, stored)),
                    _ => {
                        finished.extend(current.take());
                        current = Some((rev.main, vec![event(rev, stored)]));
                    }
                }
            }
            finished.extend(current);
            for (main, events) in finished {
                ring.bytes += events.iter().map(event_bytes).sum::<usize>();
                ring.revisions.push_back((main, events.into()));
            }
            ring.through = revision;
            while ring.bytes > RING_BYTES_MAX {
                let Some((rev, events)) = ring.revisions.pop_front() else { break };
                ring.bytes -= events.iter().map(event_bytes).sum::<usize>();
                ring.start = rev + 1;
            }
        }
        self.revision.send_replace(revision);
    }

    fn replaced(&self, revision: i64) {
        {
            let mut ring = self.ring();
            *ring = Ring { start: revision + 1, through: revision, revisions: VecDeque::new(), bytes: 0 };
        }
        self.revision.send_replace(revision);
    }
}

/// The keys a watcher follows, as etcd reads `key` and `range_end`.
#[derive(Clone, Debug)]
enum Keys {
    One(Vec<u8>),
    Range(Vec<u8>, Vec<u8>),
    From(Vec<u8>),
}

impl Keys {
    fn contains(&self, key: &[u8]) -> bool {
        match self {
            Keys::One(k) => key == k.as_slice(),
            Keys::Range(start, end) => key >= start.as_slice() && key < end.as_slice(),
            Keys::From(start) => key >= start.as_slice(),
        }
    }
}

struct Watcher {
    keys: Keys,
    /// The next revision this watcher is owed.
    next: i64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    fragment: bool,
    progress_notify: bool,
    /// Whether events went out since the last progress notification.
    sent_events: bool,
}

impl Watcher {
    fn wants(&self, event: &Event) -> bool {
        let put = event.r#type == EventType::Put as i32;
        if (put && self.no_put) || (!put && self.no_delete) {
            return false;
        }
        event.kv.as_ref().is_some_and(|kv| self.keys.contains(&kv.key))
    }
}

/// Why a stream stopped.
enum Stop {
    /// The client went away.
    Closed,
    Failed(Status),
}

/// One Watch stream: its watchers and the task that serves them.
struct Stream {
    api: Api,
    tx: mpsc::Sender<Result<WatchResponse, Status>>,
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
    /// Revisions asked for by RequestProgress, answered once every watcher is there.
    progress_requested: Option<i64>,
    max_response_bytes: usize,
    /// Who opened the stream: each create is checked against what they may read now.
    /// `None` for the member's own watches (Observe's), whose callers were checked.
    credentials: Option<Credentials>,
}

impl Stream {
    async fn send(&self, response: WatchResponse) -> Result<(), Stop> {
        self.tx.send(Ok(response)).await.map_err(|_| Stop::Closed)
    }

    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader { revision, ..self.api.header(1) })
    }

    async fn run(
        mut self,
        mut requests: impl futures::Stream<Item = Result<WatchRequest, Status>> + Unpin,
    ) -> Result<(), Stop> {
        let hub = self.api.watch_hub().clone();
        let mut applied = hub.revision.subscribe();
        let mut progress = tokio::time::interval(self.api.watch_progress_interval());
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        progress.tick().await;
        let mut reading = true;
        let mut pace = Pace::new(limits::STREAM_REQUESTS_PER_SECOND);
        loop {
            let behind = self.catch_up(&hub).await?;
            if !behind && let Some(revision) = self.progress_requested.take() {
                self.send(WatchResponse {
                    header: self.header(revision),
                    watch_id: -1,
                    ..Default::default()
                })
                .await?;
            }
            tokio::select! {
                biased;
                () = self.tx.closed() => return Err(Stop::Closed),
                message = requests.next(), if reading => match message {
                    Some(Ok(request)) => {
                        pace.wait().await;
                        self.handle(request, &hub).await?
                    }
                    // A client that half-closes keeps its watches, as with etcd.
                    None => reading = false,
                    Some(Err(_)) => return Err(Stop::Closed),
                },
                changed = applied.changed(), if !behind => {
                    if changed.is_err() {
                        return Err(Stop::Failed(EtcdError::Stopped.into()));
                    }
                }
                _ = progress.tick(), if !behind => self.notify_progress(&hub).await?,
                () = std::future::ready(()), if behind => {}
            }
        }
    }

    async fn handle(&mut self, request: WatchRequest, hub: &WatchHub) -> Result<(), Stop> {
        match request.request_union {
            Some(watch_request::RequestUnion::CreateRequest(create)) => self.create(create, hub).await,
            Some(watch_request::RequestUnion::CancelRequest(WatchCancelRequest { watch_id })) => {
                if self.watchers.remove(&watch_id).is_some() {
                    let header = self.header(hub.revision());
                    self.send(WatchResponse { header, watch_id, canceled: true, ..Default::default() })
                        .await?;
                }
                Ok(())
            }
            Some(watch_request::RequestUnion::ProgressRequest(_)) => {
                self.progress_requested = Some(hub.revision());
                Ok(())
            }
            None => Ok(()),
        }
    }

    async fn create(&mut self, create: WatchCreateRequest, hub: &WatchHub) -> Result<(), Stop> {
        let revision = hub.revision();
        // etcd's isWatchPermitted: reading the range, as the caller may now.
        let guard = Guard::Keys(vec![(Access::Read, create.key.clone(), create.range_end.clone())]);
        if let Some(Err(status)) = self.credentials.as_ref().map(|c| self.api.check(&guard, c)) {
            return self
                .send(WatchResponse {
                    header: self.header(revision),
                    watch_id: -1,
                    created: true,
                    canceled: true,
                    // etcd's reason is the error in the words of Go's gRPC error.
                    cancel_reason: format!(
                        "rpc error: code = {:?} desc = {}",
                        status.code(),
                        status.message()
                    ),
                    ..Default::default()
                })
                .await;
        }
        let key = if create.key.is_empty() { vec![0] } else { create.key };
        let keys = match create.range_end.as_slice() {
            [] => Keys::One(key),
            [0] => Keys::From(key),
            end => {
                if key.as_slice() >= end {
                    return self.refuse(revision, "mvcc: watcher range is empty").await;
                }
                Keys::Range(key, end.to_vec())
            }
        };
        if self.watchers.len() >= limits::WATCHERS_PER_STREAM_MAX {
            let reason =
                format!("synod: a watch stream holds at most {} watchers", limits::WATCHERS_PER_STREAM_MAX);
            return self.refuse(revision, &reason).await;
        }
        let id = if create.watch_id == 0 {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        } else if self.watchers.contains_key(&create.watch_id) {
            return self.refuse(revision, "mvcc: duplicate watch ID provided on the WatchStream").await;
        } else {
            create.watch_id
        };
        let next = if create.start_revision == 0 { revision + 1 } else { create.start_revision };
        let filters = |f: FilterType| create.filters.contains(&(f as i32));
        let watcher = Watcher {
            keys,
            next,
            prev_kv: create.prev_kv,
            no_put: filters(FilterType::Noput),
            no_delete: filters(FilterType::Nodelete),
            fragment: create.fragment,
            progress_notify: create.progress_notify,
            sent_events: false,
        };
        self.send(WatchResponse {
            header: self.header(revision),
            watch_id: id,
            created: true,
            ..Default::default()
        })
        .await?;
        // A start before the compaction revision is refused even if the ring still holds
        // it, as etcd refuses it.
        let compacted = self.api.state().compact_revision().map_err(|e| Stop::Failed(errors::storage(e)))?;
        if next < compacted {
            return self.send_compacted(id, compacted).await;
        }
        self.watchers.insert(id, watcher);
        Ok(())
    }

    /// etcd's response to a watcher owed compacted revisions: canceled, with the oldest
    /// revision still held, and a header without a revision.
    async fn send_compacted(&self, id: i64, compacted: i64) -> Result<(), Stop> {
        self.send(WatchResponse {
            header: self.header(0),
            watch_id: id,
            canceled: true,
            compact_revision: compacted,
            ..Default::default()
        })
        .await
    }

    async fn refuse(&self, revision: i64, reason: &str) -> Result<(), Stop> {
        self.send(WatchResponse {
            header: self.header(revision),
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..Default::default()
        })
        .await
    }

    /// Serves every watcher that is behind one chunk; returns whether any still is.
    async fn catch_up(&mut self, hub: &WatchHub) -> Result<bool, Stop> {
        let newest = hub.revision();
        let ids: Vec<i64> =
            self.watchers.iter().filter(|(_, w)| w.next <= newest).map(|(id, _)| *id).collect();
        let mut behind = false;
        for id in ids {
            let Some(watcher) = self.watchers.get(&id) else { continue };
            let from = watcher.next;
            let found = match hub.read(from, &|e| watcher.wants(e), CHUNK_BYTES) {
                Some(read) => Ok(read),
                None => self.read_stored(watcher, from)?,
            };
            let (events, through) = match found {
                Ok(read) => read,
                Err(compacted) => {
                    self.watchers.remove(&id);
                    self.send_compacted(id, compacted).await?;
                    continue;
                }
            };
            let watcher = self.watchers.get_mut(&id).expect("looked up above");
            watcher.next = through + 1;
            behind |= watcher.next <= newest;
            if events.is_empty() {
                continue;
            }
            watcher.sent_events = true;
            let (prev_kv, fragment) = (watcher.prev_kv, watcher.fragment);
            let events = if prev_kv { self.with_prev_kvs(events)? } else { events };
            let response =
                WatchResponse { header: self.header(through), watch_id: id, events, ..Default::default() };
            if fragment {
                self.send_fragments(response).await?;
            } else {
                self.send(response).await?;
            }
        }
        Ok(behind)
    }

    /// Reads a watcher's events from storage: `Ok(Err(_))` with the compaction revision if
    /// the revisions it is owed are gone. A state that cannot be read ends the stream with
    /// the error (the client resumes on another member).
    fn read_stored(&self, watcher: &Watcher, from: i64) -> Result<Result<(Vec<Event>, i64), i64>, Stop> {
        let keys = watcher.keys.clone();
        let state = self.api.state();
        let history = self.api.blocking(|| state.history(from, &|key| keys.contains(key), CHUNK_BYTES));
        match history.map_err(|e| Stop::Failed(errors::storage(e)))? {
            History::Compacted(compacted) => Ok(Err(compacted)),
            History::Changes { changes, through } => {
                let events =
                    changes.into_iter().map(|(rev, stored)| event(rev, stored)).filter(|e| watcher.wants(e));
                Ok(Ok((events.collect(), through)))
            }
        }
    }

    /// Fills each event's prev_kv with the key's value just before it, where that is not
    /// compacted.
    fn with_prev_kvs(&self, mut events: Vec<Event>) -> Result<Vec<Event>, Stop> {
        let lookups: Vec<(&[u8], i64)> = events
            .iter()
            .map(|e| {
                let kv = e.kv.as_ref().expect("events carry a key-value");
                (kv.key.as_slice(), kv.mod_revision - 1)
            })
            .collect();
        let state = self.api.state();
        let previous =
            self.api.blocking(|| state.values_at(&lookups)).map_err(|e| Stop::Failed(errors::storage(e)))?;
        for (event, previous) in events.iter_mut().zip(previous) {
            event.prev_kv = previous;
        }
        Ok(events)
    }

    /// etcd's `sendFragments`: a response of at least the gRPC limit with two or more
    /// events goes out in pieces, all but the last marked `fragment`.
    async fn send_fragments(&self, response: WatchResponse) -> Result<(), Stop> {
        if response.encoded_len() < self.max_response_bytes || response.events.len() < 2 {
            return self.send(response).await;
        }
        let template = WatchResponse { events: Vec::new(), fragment: true, ..response.clone() };
        let mut pending = response.events.into_iter().peekable();
        while pending.peek().is_some() {
            let mut piece = template.clone();
            let mut bytes = piece.encoded_len();
            while let Some(event) = pending.peek() {
                let size = event.encoded_len() + 8;
                if !piece.events.is_empty() && bytes + size >= self.max_response_bytes {
                    break;
                }
                bytes += size;
                piece.events.push(pending.next().expect("peeked"));
            }
            piece.fragment = pending.peek().is_some();
            self.send(piece).await?;
        }
        Ok(())
    }

    /// The periodic progress notification: to each watcher that asked for it and got no
    /// events since the last one, an empty response at the newest revision.
    async fn notify_progress(&mut self, hub: &WatchHub) -> Result<(), Stop> {
        let revision = hub.revision();
        let mut due = Vec::new();
        for (id, watcher) in &mut self.watchers {
            if watcher.progress_notify && !std::mem::take(&mut watcher.sent_events) && watcher.next > revision
            {
                due.push(*id);
            }
        }
        for id in due {
            self.send(WatchResponse { header: self.header(revision), watch_id: id, ..Default::default() })
                .await?;
        }
        Ok(())
    }
}

impl ServedByLearner for WatchRequest {}

#[tonic::async_trait]
impl watch_server::Watch for Api {
    type WatchStream = ReceiverStream<Result<WatchResponse, Status>>;

    async fn watch(&self, request: Request<Streaming<WatchRequest>>) -> Reply<Self::WatchStream> {
        let credentials = Credentials::from(&request);
        self.admit(&WatchRequest::default(), &credentials)?;
        Ok(tonic::Response::new(ReceiverStream::new(
            self.watch_stream(request.into_inner(), Some(credentials)),
        )))
    }
}

impl Api {
    /// Starts serving one Watch stream's `requests`; its responses come out of the
    /// receiver, and it stops when the receiver is dropped. The gRPC service and the JSON
    /// gateway share it.
    pub(crate) fn watch_stream(
        &self,
        requests: impl futures::Stream<Item = Result<WatchRequest, Status>> + Unpin + Send + 'static,
        credentials: Option<Credentials>,
    ) -> mpsc::Receiver<Result<WatchResponse, Status>> {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let stream = Stream {
            api: self.clone(),
            tx: tx.clone(),
            watchers: BTreeMap::new(),
            next_id: 0,
            progress_requested: None,
            max_response_bytes: (self.max_request_bytes() + limits::GRPC_OVERHEAD_BYTES) as usize,
            credentials,
        };
        // Counted before any watcher reads the hub's revision: from then on every apply
        // hands its events to the ring.
        let hub = self.watch_hub().clone();
        hub.streams.fetch_add(1, Ordering::AcqRel);
        let open = Open(hub);
        tokio::spawn(async move {
            let _open = open;
            if let Err(Stop::Failed(status)) = stream.run(requests).await {
                let _ = tx.send(Err(status)).await;
            }
        });
        rx
    }
}
