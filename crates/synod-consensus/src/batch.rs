//! Shared runs for concurrent requests: requests that arrive while earlier runs are under way
//! wait, and the next run takes all of them at once. Followers hand their clients' writes to
//! the leader this way (one peer call for many writes), and linearizable reads share one
//! read index (as etcd's read loop does): a run takes only requests that arrived before it
//! started, so the read index it obtains is fresh for every one of them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::sync::oneshot;

use crate::consensus::Consensus;

/// Runs one batch; it must answer the items in order, one output each.
pub(crate) type RunBatch<I, O> = fn(Consensus, Vec<I>) -> BoxFuture<'static, Vec<O>>;

pub(crate) struct Batcher<I, O> {
    queue: Arc<Mutex<Queue<I, O>>>,
    /// Runs under way at once, at most.
    max_runs: usize,
    /// Items one run takes, at most.
    max_items: usize,
}

struct Queue<I, O> {
    waiting: VecDeque<(I, oneshot::Sender<O>)>,
    running: usize,
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    pub(crate) fn new(max_runs: usize, max_items: usize) -> Batcher<I, O> {
        assert!(max_runs > 0 && max_items > 0, "a batcher must be able to run");
        Batcher {
            queue: Arc::new(Mutex::new(Queue { waiting: VecDeque::new(), running: 0 })),
            max_runs,
            max_items,
        }
    }

    /// Queues `item` and waits for its output. `None` if the run that took it ended without
    /// answering it (the runtime shut down under it).
    ///
    /// Cancel safety: dropping the future does not withdraw the item; its run may still
    /// carry it out.
    pub(crate) async fn submit(&self, consensus: &Consensus, item: I, run: RunBatch<I, O>) -> Option<O> {
        let (sender, receiver) = oneshot::channel();
        lock(&self.queue).waiting.push_back((item, sender));
        start_runs(&self.queue, self.max_runs, self.max_items, consensus, run);
        receiver.await.ok()
    }
}

fn lock<I, O>(queue: &Mutex<Queue<I, O>>) -> std::sync::MutexGuard<'_, Queue<I, O>> {
    queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts runs for the waiting items while fewer than `max_runs` are under way. Items whose
/// caller has gone (it timed out or was cancelled) are dropped, not run.
fn start_runs<I: Send + 'static, O: Send + 'static>(
    queue: &Arc<Mutex<Queue<I, O>>>,
    max_runs: usize,
    max_items: usize,
    consensus: &Consensus,
    run: RunBatch<I, O>,
) {
    // Outside a runtime (it is shutting down) nothing more can run.
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    loop {
        let batch: Vec<(I, oneshot::Sender<O>)> = {
            let mut queue = lock(queue);
            queue.waiting.retain(|(_, sender)| !sender.is_closed());
            if queue.running >= max_runs || queue.waiting.is_empty() {
                return;
            }
            queue.running += 1;
            let take = queue.waiting.len().min(max_items);
            queue.waiting.drain(..take).collect()
        };
        // Counts the run as over however it ends, and starts the next one.
        let finished =
            Finished { queue: Arc::clone(queue), max_runs, max_items, consensus: consensus.clone(), run };
        runtime.spawn(async move {
            let (items, senders): (Vec<I>, Vec<oneshot::Sender<O>>) = batch.into_iter().unzip();
            let outputs = run(finished.consensus.clone(), items).await;
            for (sender, output) in senders.into_iter().zip(outputs) {
                let _ = sender.send(output);
            }
            drop(finished);
        });
    }
}

/// Counts a run as over when dropped, also when the run panicked or its task was dropped
/// unpolled, and starts runs for what waits, so that a lost run never blocks the ones after
/// it.
struct Finished<I: Send + 'static, O: Send + 'static> {
    queue: Arc<Mutex<Queue<I, O>>>,
    max_runs: usize,
    max_items: usize,
    consensus: Consensus,
    run: RunBatch<I, O>,
}

impl<I: Send + 'static, O: Send + 'static> Drop for Finished<I, O> {
    fn drop(&mut self) {
        lock(&self.queue).running -= 1;
        start_runs(&self.queue, self.max_runs, self.max_items, &self.consensus, self.run);
    }
}
