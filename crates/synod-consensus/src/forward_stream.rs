//! A follower's forwarding stream to its leader: the writes a follower hands to the leader
//! travel as numbered batches on one long-lived stream (`ForwardStream`), and each batch's
//! answer comes back on it when all its writes are done, in whatever order they finish. A
//! forward then costs no call set-up; the batching and the bound on batches in flight stay
//! with the caller (`consensus`'s forward batcher).
//!
//! When the stream ends or breaks, every batch waiting on it fails with the stream's
//! error, and the next forward opens a new stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use synod_api::synodpb as pb;
use synod_api::synodpb::raft_client::RaftClient;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use crate::network::{PeerChannel, PeerNetwork};

/// Batches queued for sending on one stream; the caller keeps fewer than this in flight.
const QUEUED_MAX: usize = 16;

type Answer = Result<pb::ForwardResponse, Status>;

/// One follower's stream of forwards to one leader.
pub(crate) struct ForwardLink {
    requests: mpsc::Sender<pb::ForwardRequest>,
    waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Answer>>>>,
    closed: Arc<AtomicBool>,
    next: AtomicU64,
}

impl ForwardLink {
    /// Opens a stream to `leader` within `within`.
    pub(crate) async fn open(
        client: &mut RaftClient<PeerChannel>,
        network: &PeerNetwork,
        leader: u64,
        within: Duration,
    ) -> Result<ForwardLink, Status> {
        let (requests, queued) = mpsc::channel(QUEUED_MAX);
        let request = network.addressed(leader, tokio_stream::wrappers::ReceiverStream::new(queued));
        let opened = tokio::time::timeout(within, client.forward_stream(request))
            .await
            .map_err(|_| Status::deadline_exceeded("opening the forwarding stream timed out"))??;
        let mut answers = opened.into_inner();
        let waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Answer>>>> = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let (reader_waiting, reader_closed) = (waiting.clone(), closed.clone());
        tokio::spawn(async move {
            let failure = loop {
                match answers.message().await {
                    Ok(Some(answer)) => {
                        // A batch whose caller gave up is no longer waited for.
                        if let Some(caller) = lock(&reader_waiting).remove(&answer.batch) {
                            let _ = caller.send(Ok(answer));
                        }
                    }
                    Ok(None) => break Status::unavailable("the leader closed the forwarding stream"),
                    Err(status) => break status,
                }
            };
            reader_closed.store(true, Ordering::SeqCst);
            for (_, caller) in lock(&reader_waiting).drain() {
                let _ = caller.send(Err(failure.clone()));
            }
        });
        Ok(ForwardLink { requests, waiting, closed, next: AtomicU64::new(1) })
    }

    /// Whether the stream still carries forwards.
    pub(crate) fn is_open(&self) -> bool {
        !self.closed.load(Ordering::SeqCst) && !self.requests.is_closed()
    }

    /// Whether batches are waiting for their answers.
    pub(crate) fn is_idle(&self) -> bool {
        lock(&self.waiting).is_empty()
    }

    /// Sends one batch and waits for its answer, at most `within`. A batch that could not
    /// be sent fails as a connection failure ("connect": the leader never had it).
    pub(crate) async fn call(&self, mut message: pb::ForwardRequest, within: Duration) -> Answer {
        let deadline = tokio::time::Instant::now() + within;
        let batch = self.next.fetch_add(1, Ordering::Relaxed);
        message.batch = batch;
        let (answer, answered) = oneshot::channel();
        lock(&self.waiting).insert(batch, answer);
        // However this call ends (also when its caller drops it), the batch is no longer
        // waited for.
        let _waiting = Waiting { link: self, batch };
        let not_sent =
            || Status::unavailable("connect: the forwarding stream closed before the batch was sent");
        // The reader marks the stream closed before it fails the waiting batches: a batch
        // registered after that is failed here.
        if self.closed.load(Ordering::SeqCst) && lock(&self.waiting).remove(&batch).is_some() {
            return Err(not_sent());
        }
        match tokio::time::timeout_at(deadline, self.requests.send(message)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(not_sent()),
            Err(_) => return Err(Status::deadline_exceeded("the forwarding stream stayed full")),
        }
        match tokio::time::timeout_at(deadline, answered).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(Status::unknown("the forwarding stream ended")),
            Err(_) => Err(Status::deadline_exceeded("the forwarded writes were not answered in time")),
        }
    }
}

/// A batch waited for; dropping it ends the wait.
struct Waiting<'a> {
    link: &'a ForwardLink,
    batch: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        lock(&self.link.waiting).remove(&self.batch);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
