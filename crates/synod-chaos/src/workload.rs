//! The clients and what they record: registers on a few keys, read, written with unique
//! values, deleted, and compare-and-set in a Txn; one native counter, added to and read;
//! and one lock, acquired through etcd's Lock service and released by a Txn fenced by its
//! token.
//!
//! A counter add carries the client's session (a lease) and a sequence number, and is
//! retried until it is answered or [`ADD_RETRY`] passes, all within one recorded call: a
//! retry that added again would make the counter disagree with the history.
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
use synod_api::etcdserverpb::lease_client::LeaseClient;
use synod_api::etcdserverpb::{LeaseGrantRequest, LeaseRevokeRequest, RangeRequest};
use synod_api::synod::v1::counter_client::CounterClient;
use synod_api::synod::v1::{AddRequest, GetRequest};
use synod_api::v3lockpb::LockRequest;
use synod_api::v3lockpb::lock_client::LockClient;
use synod_check::etcd::{self, EtcdRequest, EtcdResponse};
use synod_check::{Call, Op, Outcome, Reply};
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

/// The native counter's key and the lock's name.
const COUNTER: &str = "counter";
const LOCK: &str = "lock";

/// How long a counter add is retried (with the same session and sequence) before its
/// outcome is recorded as unknown.
const ADD_RETRY: Duration = Duration::from_secs(5);

/// How long an Acquire waits for the lock before it gives up; its outcome is then unknown.
const ACQUIRE_WAIT: Duration = Duration::from_secs(2);

/// The TTL of a client's session lease: longer than any run, so that a lock is never lost
/// to an expiry the lock model does not know of. A client drops its lease (revoking it)
/// after any lock call whose outcome is unknown, which releases what it might hold.
const SESSION_TTL: i64 = 3600;

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
            kv: KvClient::new(channel.clone()),
            counter: CounterClient::new(channel.clone()),
            leases: LeaseClient::new(channel.clone()),
            locks: LockClient::new(channel),
            session: None,
            holding: None,
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
    counter: CounterClient<Channel>,
    leases: LeaseClient<Channel>,
    locks: LockClient<Channel>,
    /// The lease of the client's counter session and lock ownership.
    session: Option<i64>,
    /// The lock's key and token while this client holds it.
    holding: Option<(Vec<u8>, i64)>,
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
            let outcome = match &call {
                Call::Add { .. } | Call::ReadCounter { .. } | Call::Acquire { .. } | Call::Release { .. } => {
                    self.perform_own(&call).await
                }
                _ => perform(&mut self.kv, &call).await,
            };
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
        if roll < 34 {
            return Call::Get { key };
        }
        if roll < 42 {
            return Call::Delete { key };
        }
        if roll < 52 {
            return Call::Add { key: COUNTER.into(), delta: self.rng.random_range(1..=3) };
        }
        if roll < 56 {
            return Call::ReadCounter { key: COUNTER.into() };
        }
        if roll < 62 {
            let owner = format!("c{}", self.id);
            return match &self.holding {
                Some((_, token)) => Call::Release { lock: LOCK.into(), owner, token: *token },
                None => Call::Acquire { lock: LOCK.into(), owner },
            };
        }
        self.seq += 1;
        let value = format!("c{}-{}", self.id, self.seq);
        if roll < 81 {
            return Call::Put { key, value };
        }
        // Mostly the value last seen, so that some CAS calls succeed; sometimes "absent".
        let expect = if self.rng.random_bool(0.25) { None } else { self.seen.get(&key).cloned().flatten() };
        Call::Cas { key, expect, value }
    }

    /// Makes a counter or lock call, which is not one KV request.
    async fn perform_own(&mut self, call: &Call) -> Outcome {
        match call {
            Call::Add { key, delta } => self.add(key, *delta).await,
            Call::ReadCounter { key } => {
                let request = GetRequest { key: key.clone().into_bytes(), serializable: false };
                match rpc::bounded(self.counter.get(request)).await {
                    Ok(response) => Outcome::Ok {
                        reply: Reply::ReadCounter { value: response.value },
                        revision: response.header.map(|h| h.revision),
                    },
                    Err(error) => unsent_or_unknown(error),
                }
            }
            Call::Acquire { lock, .. } => {
                let outcome = self.acquire(lock).await;
                if matches!(outcome, Outcome::Unknown { .. }) {
                    // It may have been granted unseen: give it back by ending the lease.
                    self.drop_session().await;
                }
                outcome
            }
            Call::Release { .. } => {
                let outcome = self.release().await;
                match &outcome {
                    Outcome::Ok { .. } => self.holding = None,
                    Outcome::Unknown { .. } => {
                        self.holding = None;
                        self.drop_session().await;
                    }
                    Outcome::Fail { .. } => {}
                }
                outcome
            }
            _ => Outcome::Fail { error: format!("{call:?} is a KV call") },
        }
    }

    /// The client's session lease, granted when it has none.
    async fn session(&mut self) -> Result<i64, CallError> {
        if let Some(lease) = self.session {
            return Ok(lease);
        }
        let grant = LeaseGrantRequest { ttl: SESSION_TTL, id: 0 };
        let lease = rpc::bounded(self.leases.lease_grant(grant)).await?.id;
        self.session = Some(lease);
        Ok(lease)
    }

    /// Ends the session, releasing the lock if it held it unseen; best effort (a lease
    /// whose revocation is lost keeps what it holds until it expires).
    async fn drop_session(&mut self) {
        if let Some(lease) = self.session.take() {
            let _ = rpc::bounded(self.leases.lease_revoke(LeaseRevokeRequest { id: lease })).await;
        }
    }

    /// Adds in the session, retrying the same add until it is answered.
    async fn add(&mut self, key: &str, delta: i64) -> Outcome {
        let lease = match self.session().await {
            Ok(lease) => lease,
            // The add itself was never sent.
            Err(error) => return Outcome::Fail { error: format!("no session: {error}") },
        };
        self.seq += 1;
        let request = AddRequest {
            key: key.as_bytes().to_vec(),
            delta,
            session: lease,
            sequence: self.seq,
            answered_below: self.seq,
        };
        let deadline = Instant::now() + ADD_RETRY;
        let mut sent = false;
        loop {
            match rpc::bounded(self.counter.add(request.clone())).await {
                Ok(response) => {
                    return Outcome::Ok {
                        reply: Reply::Add { value: response.value },
                        revision: response.header.map(|h| h.revision),
                    };
                }
                Err(error) => {
                    sent |= matches!(error, CallError::Unknown(_));
                    if Instant::now() >= deadline {
                        // Only an add that never left the client is known not to apply.
                        return if sent {
                            Outcome::Unknown { error: error.to_string() }
                        } else {
                            Outcome::Fail { error: error.to_string() }
                        };
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(self.rng.random_range(BACKOFF_MS))).await;
        }
    }

    /// Waits for the lock, then reads its key's create revision: the fencing token.
    async fn acquire(&mut self, lock: &str) -> Outcome {
        let lease = match self.session().await {
            Ok(lease) => lease,
            Err(error) => return Outcome::Fail { error: format!("no session: {error}") },
        };
        let request = LockRequest { name: lock.as_bytes().to_vec(), lease };
        let key = match tokio::time::timeout(ACQUIRE_WAIT, self.locks.lock(request)).await {
            Ok(Ok(response)) => response.into_inner().key,
            Ok(Err(status)) => {
                return Outcome::Unknown { error: format!("{:?}: {}", status.code(), status.message()) };
            }
            Err(_) => return Outcome::Unknown { error: format!("not granted within {ACQUIRE_WAIT:?}") },
        };
        let read = RangeRequest { key: key.clone(), ..Default::default() };
        match rpc::bounded(self.kv.range(read)).await {
            Ok(response) => match response.kvs.first() {
                Some(kv) => {
                    let token = kv.create_revision;
                    self.holding = Some((key, token));
                    Outcome::Ok {
                        reply: Reply::Acquire { token },
                        revision: response.header.map(|h| h.revision),
                    }
                }
                None => Outcome::Unknown { error: "the lock's key vanished after it was granted".into() },
            },
            Err(error) => Outcome::Unknown { error: format!("reading the token: {error}") },
        }
    }

    /// Releases the lock if this client's grant still holds it: a Txn that deletes the key
    /// only if its create revision is the token.
    async fn release(&mut self) -> Outcome {
        let Some((key, token)) = self.holding.clone() else {
            return Outcome::Fail { error: "not holding the lock".into() };
        };
        let release = etcd::fenced_release(&key, token);
        match rpc::bounded(self.kv.txn(release)).await {
            Ok(response) => Outcome::Ok {
                reply: Reply::Release { released: response.succeeded },
                revision: response.header.map(|h| h.revision),
            },
            Err(error) => unsent_or_unknown(error),
        }
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

fn unsent_or_unknown(error: CallError) -> Outcome {
    match error {
        CallError::NotSent(error) => Outcome::Fail { error },
        CallError::Unknown(error) => Outcome::Unknown { error },
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
