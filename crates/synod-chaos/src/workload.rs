//! The clients and what they record: registers on a few keys, read, written with unique
//! values, deleted, and compare-and-set in a Txn.
//!
//! Each client makes one call at a time (the checker needs that) to one member, chosen by
//! its number, so a member that is cut off or lagging keeps being asked: that is where
//! stale reads would show. An error is an unknown outcome, not a failure: a write that
//! timed out, lost its connection or was refused by a member may still be applied. The one
//! exception is a call that was never sent because no connection could be made
//! ([`CallError::NotSent`]); recording those as unknown would flood the checker with
//! writes that may "take effect at any time" when they cannot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use synod_api::etcdserverpb::kv_client::KvClient;
use synod_check::etcd::{self, EtcdRequest, EtcdResponse};
use synod_check::{Call, Op, Outcome};
use tonic::transport::Channel;

use crate::rpc::{self, CallError};

/// What the clients do; the seed fixes their choices, not the timing.
#[derive(Clone, Debug)]
pub struct Settings {
    pub clients: usize,
    pub keys: usize,
    pub seed: u64,
    /// The clients stop at this time or when `Recorder::max_ops` calls were made.
    pub stop_at: Instant,
}

/// Pause between a client's calls: keeps a run at a few hundred calls a second on two
/// cores, where the members, the proxies and the clients share the CPU.
const PACE_MS: std::ops::Range<u64> = 2..10;
/// Pause after a call that got no reply, as a real client backs off. Without it a client
/// of a member without a leader would pile up hundreds of unknown writes a second, and
/// each unknown write widens the checker's search.
const BACKOFF_MS: std::ops::Range<u64> = 50..250;

/// The history being recorded, on one clock started with the run.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Op>>,
    calls: AtomicU64,
    max_ops: u64,
}

impl Recorder {
    pub fn new(start: Instant, max_ops: u64) -> Recorder {
        Recorder { start, ops: Mutex::new(Vec::new()), calls: AtomicU64::new(0), max_ops }
    }

    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Counts one more workload call; false once `max_ops` were made.
    fn reserve(&self) -> bool {
        self.calls.fetch_add(1, Ordering::Relaxed) < self.max_ops
    }

    pub fn record(&self, op: Op) {
        self.lock().push(op);
    }

    /// The history so far, in the order the calls returned.
    pub fn ops(&self) -> Vec<Op> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Op>> {
        // Pushing an Op cannot leave the vector half-written, so a poisoned lock is usable.
        self.ops.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The name of key `index`.
pub fn key(index: usize) -> String {
    format!("k{index}")
}

/// Runs the clients until `settings.stop_at` or the call budget; `members` are the
/// members' names and channels, client `i` talks to member `i % members.len()`.
pub async fn run(settings: &Settings, members: &[(String, Channel)], recorder: Arc<Recorder>) -> Result<()> {
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..settings.clients {
        let (member, channel) = members[client % members.len()].clone();
        let client = Client {
            id: client as u32,
            member,
            kv: KvClient::new(channel),
            rng: StdRng::seed_from_u64(
                settings.seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(client as u64 + 1)),
            ),
            keys: settings.keys,
            seq: 0,
            seen: HashMap::new(),
        };
        clients.spawn(client.run(settings.stop_at, recorder.clone()));
    }
    while let Some(done) = clients.join_next().await {
        done.map_err(|error| anyhow!("a client task failed: {error}"))?;
    }
    Ok(())
}

/// Reads every key once through each member, recording the reads, retrying each until it
/// succeeds or `deadline` passes. Client numbers start at `first_client`.
pub async fn final_reads(
    members: &[(String, Channel)],
    keys: usize,
    first_client: u32,
    deadline: Instant,
    recorder: &Recorder,
) -> Result<()> {
    for (offset, (member, channel)) in members.iter().enumerate() {
        let mut kv = KvClient::new(channel.clone());
        for index in 0..keys {
            let call = Call::Get { key: key(index) };
            loop {
                let call_ns = recorder.now_ns();
                let outcome = perform(&mut kv, &call).await;
                let ok = matches!(outcome, Outcome::Ok { .. });
                let error = match &outcome {
                    Outcome::Unknown { error } | Outcome::Fail { error } => error.clone(),
                    Outcome::Ok { .. } => String::new(),
                };
                recorder.record(Op {
                    client: first_client + offset as u32,
                    member: member.clone(),
                    call_ns,
                    return_ns: recorder.now_ns(),
                    call: call.clone(),
                    outcome,
                });
                if ok {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(anyhow!(
                        "the final read of {} through member {member} failed: {error}",
                        key(index)
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    Ok(())
}

/// One logical client: one call at a time, to one member.
struct Client {
    id: u32,
    member: String,
    kv: KvClient<Channel>,
    rng: StdRng,
    keys: usize,
    /// Numbers the values this client writes, which makes every value in the run unique.
    seq: u64,
    /// The last value this client saw for each key (None: absent), for its CAS guesses.
    seen: HashMap<String, Option<String>>,
}

impl Client {
    async fn run(mut self, stop_at: Instant, recorder: Arc<Recorder>) {
        while Instant::now() < stop_at && recorder.reserve() {
            let call = self.next_call();
            let call_ns = recorder.now_ns();
            let outcome = perform(&mut self.kv, &call).await;
            let return_ns = recorder.now_ns();
            self.learn(&call, &outcome);
            let pace = if matches!(outcome, Outcome::Ok { .. }) { PACE_MS } else { BACKOFF_MS };
            recorder.record(Op {
                client: self.id,
                member: self.member.clone(),
                call_ns,
                return_ns,
                call,
                outcome,
            });
            let pause = Duration::from_millis(self.rng.random_range(pace));
            tokio::time::sleep(pause).await;
        }
    }

    fn next_call(&mut self) -> Call {
        let key = key(self.rng.random_range(0..self.keys));
        let roll = self.rng.random_range(0..100);
        if roll < 40 {
            return Call::Get { key };
        }
        if roll < 50 {
            return Call::Delete { key };
        }
        self.seq += 1;
        let value = format!("c{}-{}", self.id, self.seq);
        if roll < 75 {
            return Call::Put { key, value };
        }
        // Mostly the value last seen, so that some CAS calls succeed; sometimes "absent".
        let expect = if self.rng.random_bool(0.25) { None } else { self.seen.get(&key).cloned().flatten() };
        Call::Cas { key, expect, value }
    }

    /// Remembers what a call revealed about its key.
    fn learn(&mut self, call: &Call, outcome: &Outcome) {
        if let Outcome::Ok { reply, .. } = outcome
            && let Some(seen) = call.revealed(reply)
        {
            self.seen.insert(call.object().to_string(), seen);
        }
    }
}

/// Makes one call and says how it ended.
async fn perform(kv: &mut KvClient<Channel>, call: &Call) -> Outcome {
    let result = match etcd::request(call) {
        Ok(EtcdRequest::Range(request)) => rpc::bounded(kv.range(request)).await.map(EtcdResponse::Range),
        Ok(EtcdRequest::Put(request)) => rpc::bounded(kv.put(request)).await.map(EtcdResponse::Put),
        Ok(EtcdRequest::DeleteRange(request)) => {
            rpc::bounded(kv.delete_range(request)).await.map(EtcdResponse::DeleteRange)
        }
        Ok(EtcdRequest::Txn(request)) => rpc::bounded(kv.txn(request)).await.map(EtcdResponse::Txn),
        // Nothing was sent.
        Err(error) => return Outcome::Fail { error },
    };
    match result {
        Ok(response) => {
            let (reply, revision) = etcd::reply(&response);
            Outcome::Ok { reply, revision }
        }
        // The one error that proves the call did not take effect: it was never sent.
        Err(error @ CallError::NotSent(_)) => Outcome::Fail { error: error.to_string() },
        Err(error @ CallError::Unknown(_)) => Outcome::Unknown { error: error.to_string() },
    }
}
