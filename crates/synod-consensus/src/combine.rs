//! Leader-side combining of counter adds: adds to one key that arrive while an entry for
//! that key is in flight wait, and the next entry carries all of them, in arrival order.
//! Applying it gives each add its own running value (see `synod_mvcc::counter`), so one
//! log entry, one fsync and one revision serve many clients, and a hot counter's rate is
//! the commit rate times the adds per entry rather than the commit rate alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use openraft::errors::{ClientWriteError, RaftError};
use synod_api::synodpb::{Command, CounterAdd, CounterOp, command};
use synod_mvcc::{Applied, Response};

use crate::batch::{Batcher, RunBatch};
use crate::consensus::Consensus;
use crate::types::{Proposal, TypeConfig};

/// openraft's answer to one write: the log index it was applied at and its outcome.
pub(crate) type WriteOutcome =
    Result<(u64, Option<Applied>), RaftError<TypeConfig, ClientWriteError<TypeConfig>>>;

/// Adds one entry carries at most: with ~30 bytes an add, an entry stays near 120 KiB.
pub(crate) const COMBINE_MAX: usize = 4096;

/// Entries in flight for one key at once. One: every add that arrives meanwhile waits for
/// the next entry, which is what makes the entries large under contention.
const ENTRIES_IN_FLIGHT: usize = 1;

/// One add waiting for an entry.
struct Add {
    key: Vec<u8>,
    op: CounterOp,
}

type KeyBatcher = Batcher<Add, WriteOutcome>;

/// The adds waiting, per counter key. A key's batcher is dropped once nothing waits on it,
/// so the map holds only keys with adds under way.
#[derive(Default)]
pub(crate) struct Combiner {
    keys: Mutex<HashMap<Vec<u8>, Arc<KeyBatcher>>>,
}

/// The single add `command` carries, when it is one the combiner can fold with others.
pub(crate) fn single_add(command: &Command) -> Option<(&[u8], &CounterOp)> {
    match &command.op {
        Some(command::Op::CounterAdd(CounterAdd { key, ops })) if ops.len() == 1 => Some((key, &ops[0])),
        _ => None,
    }
}

impl Combiner {
    /// Writes the add through an entry shared with the other adds to `key` that wait.
    pub(crate) async fn write(&self, consensus: &Consensus, key: &[u8], op: CounterOp) -> WriteOutcome {
        let waiting = {
            let mut keys = lock(&self.keys);
            let batcher = keys
                .entry(key.to_vec())
                .or_insert_with(|| Arc::new(Batcher::new(ENTRIES_IN_FLIGHT, COMBINE_MAX)));
            Waiting { combiner: self, key, batcher: Some(Arc::clone(batcher)) }
        };
        let batcher = Arc::clone(waiting.batcher.as_ref().expect("set until dropped"));
        let run: RunBatch<Add, WriteOutcome> =
            |consensus, adds| Box::pin(async move { write_entry(&consensus, adds).await });
        let outcome = batcher.submit(consensus, Add { key: key.to_vec(), op }, run).await;
        drop(batcher);
        drop(waiting);
        // A run that ended without answering: the runtime is shutting down under it.
        outcome.unwrap_or(Err(RaftError::Fatal(openraft::errors::Fatal::Stopped)))
    }
}

/// One add's hold on its key's batcher. When the last add of a key lets go (answered, or
/// its caller gone), the key leaves the map, so the map holds only keys with adds under way.
struct Waiting<'a> {
    combiner: &'a Combiner,
    key: &'a [u8],
    batcher: Option<Arc<KeyBatcher>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut keys = lock(&self.combiner.keys);
        // Let go under the lock, where every add takes its reference: a count of one after
        // that is the map's own, and no add waits on the batcher any more.
        let Some(batcher) = self.batcher.take() else { return };
        drop(batcher);
        if keys.get(self.key).is_some_and(|mapped| Arc::strong_count(mapped) == 1) {
            keys.remove(self.key);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Proposes one entry for `adds` (all to one key) and hands each its own outcome.
async fn write_entry(consensus: &Consensus, adds: Vec<Add>) -> Vec<WriteOutcome> {
    let count = adds.len();
    let key = adds[0].key.clone();
    let ops = adds.into_iter().map(|add| add.op).collect();
    let command =
        Command { op: Some(command::Op::CounterAdd(CounterAdd { key, ops })), ..Default::default() };
    match consensus.inner.raft.client_write(Proposal(command)).await {
        Ok(response) => {
            consensus.inner.observer.counter_entry(count);
            split(response.log_id.index, response.data.0, count)
                .into_iter()
                .map(|(index, applied)| Ok((index, applied)))
                .collect()
        }
        Err(e) => vec![Err(e); count],
    }
}

/// Each add's share of an entry's outcome: its own op result, or the entry's error.
fn split(index: u64, applied: Option<Applied>, count: usize) -> Vec<(u64, Option<Applied>)> {
    match applied {
        Some(Ok(Response::CounterAdd(results))) if results.len() == count => {
            results.into_iter().map(|result| (index, Some(Ok(Response::CounterAdd(vec![result]))))).collect()
        }
        other => vec![(index, other); count],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_api::EtcdError;
    use synod_mvcc::counter::CounterValue;

    #[test]
    fn each_add_gets_its_own_result() {
        let first = Ok(CounterValue { value: 1, revision: 5 });
        let second = Err(EtcdError::CounterOverflow);
        let applied = Some(Ok(Response::CounterAdd(vec![first, second])));
        let shares = split(9, applied, 2);
        assert_eq!(
            shares,
            vec![
                (9, Some(Ok(Response::CounterAdd(vec![first])))),
                (9, Some(Ok(Response::CounterAdd(vec![second])))),
            ]
        );
        // An error of the whole entry is every add's.
        assert_eq!(split(9, Some(Err(EtcdError::NoSpace)), 2), vec![(9, Some(Err(EtcdError::NoSpace))); 2]);
    }
}
