//! etcd's Lock and Election services on synod: the same answers as etcd for the same calls,
//! waiters served in order, a lock freed when its holder's lease expires, Observe following
//! leaders, and fencing: a holder whose lease expired while it was paused is refused by the
//! protected resource by its token.

mod support;

use std::time::Duration;

use support::Server;
use synod_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use synod_api::etcdserverpb::kv_client::KvClient;
use synod_api::etcdserverpb::lease_client::LeaseClient;
use synod_api::etcdserverpb::{
    Compare, LeaseGrantRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, request_op,
};
use synod_api::v3electionpb::election_client::ElectionClient;
use synod_api::v3electionpb::{CampaignRequest, LeaderKey, LeaderRequest, ProclaimRequest, ResignRequest};
use synod_api::v3lockpb::lock_client::LockClient;
use synod_api::v3lockpb::{LockRequest, UnlockRequest};
use tonic::transport::Channel;

/// How long a call that should return gets.
const DEADLINE: Duration = Duration::from_secs(20);

async fn grant(channel: &Channel, ttl: i64) -> i64 {
    let request = LeaseGrantRequest { ttl, id: 0 };
    LeaseClient::new(channel.clone()).lease_grant(request).await.expect("grant").into_inner().id
}

/// Waits until `key` exists: a waiter has taken its place in the queue.
async fn wait_for_key(channel: &Channel, key: &[u8]) {
    wait_for_keys(channel, key, b"", 1).await;
}

/// Waits until `count` keys are in `key..range_end` (one key when `range_end` is empty).
async fn wait_for_keys(channel: &Channel, key: &[u8], range_end: &[u8], count: usize) {
    let mut kv = KvClient::new(channel.clone());
    let range = RangeRequest { key: key.to_vec(), range_end: range_end.to_vec(), ..Default::default() };
    tokio::time::timeout(DEADLINE, async {
        loop {
            if kv.range(range.clone()).await.expect("range").into_inner().kvs.len() == count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} never held {count} keys", String::from_utf8_lossy(key)));
}

async fn create_revision(channel: &Channel, key: &[u8]) -> i64 {
    let range = RangeRequest { key: key.to_vec(), ..Default::default() };
    let kvs = KvClient::new(channel.clone()).range(range).await.expect("range").into_inner().kvs;
    kvs.first().map_or(0, |kv| kv.create_revision)
}

/// A run of Lock and Election calls, written out with lease ids replaced by their role, so
/// that etcd's and synod's runs can be compared line for line.
async fn scenario(endpoint: String) -> Vec<String> {
    let channel = Channel::from_shared(endpoint).expect("endpoint").connect().await.expect("connect");
    let (a, b) = (grant(&channel, 60).await, grant(&channel, 60).await);
    let roles = move |text: String| text.replace(&format!("{a:x}"), "<A>").replace(&format!("{b:x}"), "<B>");
    let mut out = Vec::new();
    let mut lock = LockClient::new(channel.clone());

    // A holds the lock; B waits until A unlocks, then holds it.
    let held = lock.lock(LockRequest { name: b"l".to_vec(), lease: a }).await.expect("lock a").into_inner();
    out.push(roles(format!("lock a: {}", String::from_utf8_lossy(&held.key))));
    let again =
        lock.lock(LockRequest { name: b"l".to_vec(), lease: a }).await.expect("lock a again").into_inner();
    out.push(roles(format!("lock a again: {}", String::from_utf8_lossy(&again.key))));
    let token_a = create_revision(&channel, &held.key).await;
    let mut waiter_client = lock.clone();
    let waiter =
        tokio::spawn(async move { waiter_client.lock(LockRequest { name: b"l".to_vec(), lease: b }).await });
    wait_for_key(&channel, format!("l/{b:x}").as_bytes()).await;
    out.push(format!("b waits while a holds: {}", !waiter.is_finished()));
    lock.unlock(UnlockRequest { key: held.key.clone() }).await.expect("unlock a");
    let granted = tokio::time::timeout(DEADLINE, waiter).await.expect("b gets the lock").expect("task");
    let granted = granted.expect("lock b").into_inner();
    out.push(roles(format!("lock b after a unlocked: {}", String::from_utf8_lossy(&granted.key))));
    let token_b = create_revision(&channel, &granted.key).await;
    out.push(format!("b's token is larger: {}", token_b > token_a));
    lock.unlock(UnlockRequest { key: granted.key }).await.expect("unlock b");

    // Elections: A leads and proclaims; B campaigns and waits; A resigns; B leads.
    let mut election = ElectionClient::new(channel.clone());
    let none = election.leader(LeaderRequest { name: b"e".to_vec() }).await.expect_err("nobody leads");
    out.push(format!("leader of an empty election: {:?} {}", none.code(), none.message()));
    // etcd sends Observe's response headers with its first message, so the call returns
    // only once someone leads: it waits in a task of its own.
    let mut observer = election.clone();
    let observing =
        tokio::spawn(async move { observer.observe(LeaderRequest { name: b"e".to_vec() }).await });
    let campaign = CampaignRequest { name: b"e".to_vec(), lease: a, value: b"v1".to_vec() };
    let leader_a =
        election.campaign(campaign).await.expect("campaign a").into_inner().leader.expect("leader");
    let mut observe = tokio::time::timeout(DEADLINE, observing)
        .await
        .expect("observe answers once a leads")
        .expect("task")
        .expect("observe")
        .into_inner();
    out.push(roles(format!(
        "campaign a: name={} key={} lease={}",
        String::from_utf8_lossy(&leader_a.name),
        String::from_utf8_lossy(&leader_a.key),
        leader_a.lease == a
    )));
    out.push(format!(
        "a's rev is its key's create revision: {}",
        leader_a.rev == create_revision(&channel, &leader_a.key).await
    ));
    out.push(roles(observed(&mut observe).await));
    let proclaim = ProclaimRequest { leader: Some(leader_a.clone()), value: b"v2".to_vec() };
    election.proclaim(proclaim).await.expect("proclaim");
    let current = election.leader(LeaderRequest { name: b"e".to_vec() }).await.expect("leader").into_inner();
    out.push(format!("leader value: {}", String::from_utf8_lossy(&current.kv.expect("kv").value)));
    let stale = LeaderKey { rev: leader_a.rev - 1, ..leader_a.clone() };
    let refused =
        election.proclaim(ProclaimRequest { leader: Some(stale.clone()), value: b"x".to_vec() }).await;
    let refused = refused.expect_err("a stale leader key");
    out.push(format!("proclaim with a stale key: {:?} {}", refused.code(), refused.message()));
    let missing =
        election.proclaim(ProclaimRequest { leader: None, value: b"x".to_vec() }).await.expect_err("no key");
    out.push(format!("proclaim without a key: {:?} {}", missing.code(), missing.message()));
    election
        .resign(ResignRequest { leader: Some(stale) })
        .await
        .expect("resign with a stale key does nothing");
    let mut waiter_client = election.clone();
    let waiter = tokio::spawn(async move {
        waiter_client.campaign(CampaignRequest { name: b"e".to_vec(), lease: b, value: b"w".to_vec() }).await
    });
    wait_for_key(&channel, format!("e/{b:x}").as_bytes()).await;
    out.push(format!("b waits while a leads: {}", !waiter.is_finished()));
    election.resign(ResignRequest { leader: Some(leader_a) }).await.expect("resign a");
    let leader_b = tokio::time::timeout(DEADLINE, waiter).await.expect("b leads").expect("task");
    let leader_b = leader_b.expect("campaign b").into_inner().leader.expect("leader");
    out.push(roles(format!("campaign b after a resigned: {}", String::from_utf8_lossy(&leader_b.key))));
    for _ in 0..2 {
        out.push(roles(observed(&mut observe).await));
    }
    out
}

/// The next leader Observe reports, as `observed KEY = VALUE`.
async fn observed(observe: &mut tonic::Streaming<synod_api::v3electionpb::LeaderResponse>) -> String {
    let seen = tokio::time::timeout(DEADLINE, observe.message()).await.expect("observe").expect("stream");
    let kv = seen.expect("an observation").kv.expect("kv");
    format!("observed {} = {}", String::from_utf8_lossy(&kv.key), String::from_utf8_lossy(&kv.value))
}

/// The same calls get the same answers from synod as from etcd: keys, waiting in order,
/// errors with etcd's codes and texts, and Observe's sequence.
#[test]
fn lock_and_election_match_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["synod", "etcd"] {
        std::fs::create_dir(dir.path().join(name)).expect("create a server dir");
    }
    let synod = Server::synod(&dir.path().join("synod"));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let synod_run = runtime.block_on(scenario(synod.endpoint()));
    // What etcd does is the reference; these lines say it without needing etcd.
    assert_eq!(synod_run[0], "lock a: l/<A>");
    assert!(synod_run.contains(&"b's token is larger: true".to_string()), "{synod_run:#?}");
    let Some(etcd) = Server::etcd(&dir.path().join("etcd")) else { return };
    let etcd_run = runtime.block_on(scenario(etcd.endpoint()));
    assert_eq!(synod_run, etcd_run);
}

/// A lock whose holder stops renewing its lease is freed when the lease expires, and the
/// next waiter gets it.
#[test]
fn a_lock_is_freed_when_its_lease_expires() {
    let dir = tempfile::tempdir().expect("tempdir");
    let synod = Server::synod(dir.path());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let channel =
            Channel::from_shared(synod.endpoint()).expect("endpoint").connect().await.expect("connect");
        let (short, long) = (grant(&channel, 2).await, grant(&channel, 60).await);
        let mut lock = LockClient::new(channel.clone());
        lock.lock(LockRequest { name: b"job".to_vec(), lease: short }).await.expect("lock");
        let started = tokio::time::Instant::now();
        let next =
            tokio::time::timeout(DEADLINE, lock.lock(LockRequest { name: b"job".to_vec(), lease: long }))
                .await
                .expect("the waiter gets the lock once the holder's lease expires")
                .expect("lock");
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "granted before the holder's lease could expire"
        );
        assert_eq!(next.into_inner().key, format!("job/{long:x}").into_bytes());
        // A lease that does not exist holds nothing. (etcd 3.4's server waits forever on
        // this call instead of answering.)
        let missing =
            lock.lock(LockRequest { name: b"job".to_vec(), lease: 12345 }).await.expect_err("no lease");
        assert_eq!(
            (missing.code(), missing.message()),
            (tonic::Code::NotFound, "etcdserver: requested lease not found")
        );
    });
}

/// The protected resource of `docs/locks.md`: it remembers the largest fencing token it
/// has accepted and refuses writes carrying a smaller one.
#[derive(Default)]
struct FencedResource {
    largest_token: i64,
    writes: Vec<(i64, &'static str)>,
}

impl FencedResource {
    fn write(&mut self, token: i64, what: &'static str) -> Result<(), String> {
        if token < self.largest_token {
            return Err(format!("token {token} is older than {}", self.largest_token));
        }
        self.largest_token = token;
        self.writes.push((token, what));
        Ok(())
    }
}

/// Holder A takes the lock, then pauses (stops renewing) until its lease expires; B takes
/// the lock. When A wakes and writes with its token, the resource refuses it, and so does a
/// Txn guarded by A's key's create revision on synod itself.
#[test]
fn a_paused_holder_is_fenced_off_by_its_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let synod = Server::synod(dir.path());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let channel =
            Channel::from_shared(synod.endpoint()).expect("endpoint").connect().await.expect("connect");
        let mut lock = LockClient::new(channel.clone());
        let mut resource = FencedResource::default();

        let lease_a = grant(&channel, 2).await;
        let key_a = lock
            .lock(LockRequest { name: b"res".to_vec(), lease: lease_a })
            .await
            .expect("lock a")
            .into_inner()
            .key;
        let token_a = create_revision(&channel, &key_a).await;
        resource.write(token_a, "a's first write").expect("a holds the lock");

        // A pauses; its lease expires and B gets the lock.
        let lease_b = grant(&channel, 60).await;
        let key_b =
            tokio::time::timeout(DEADLINE, lock.lock(LockRequest { name: b"res".to_vec(), lease: lease_b }))
                .await
                .expect("b gets the lock after a's lease expired")
                .expect("lock b")
                .into_inner()
                .key;
        let token_b = create_revision(&channel, &key_b).await;
        assert!(token_b > token_a);
        resource.write(token_b, "b's write").expect("b holds the lock");

        // A wakes up, still believing it holds the lock.
        let refused = resource.write(token_a, "a's late write");
        assert!(refused.is_err(), "the resource took a stale holder's write");
        assert_eq!(resource.writes, vec![(token_a, "a's first write"), (token_b, "b's write")]);

        // The same fence on synod's own keys: a write guarded by the holder's key.
        let guarded = |key: &[u8], token: i64| TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Create as i32,
                key: key.to_vec(),
                target_union: Some(TargetUnion::CreateRevision(token)),
                ..Default::default()
            }],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: b"res-data".to_vec(),
                    value: b"written".to_vec(),
                    ..Default::default()
                })),
            }],
            failure: Vec::new(),
        };
        let mut kv = KvClient::new(channel.clone());
        assert!(!kv.txn(guarded(&key_a, token_a)).await.expect("txn").into_inner().succeeded);
        assert!(kv.txn(guarded(&key_b, token_b)).await.expect("txn").into_inner().succeeded);
    });
}

/// Locks without a lease each get a key of their own, so the second waits for the first;
/// and a waiter whose call is cancelled leaves the queue, so it holds nobody up.
#[test]
fn leaseless_locks_queue_and_cancelled_waiters_leave() {
    let dir = tempfile::tempdir().expect("tempdir");
    let synod = Server::synod(dir.path());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let channel =
            Channel::from_shared(synod.endpoint()).expect("endpoint").connect().await.expect("connect");
        let mut lock = LockClient::new(channel.clone());
        let first =
            lock.lock(LockRequest { name: b"free".to_vec(), lease: 0 }).await.expect("lock").into_inner();
        let mut second_client = lock.clone();
        let second = tokio::spawn(async move {
            second_client.lock(LockRequest { name: b"free".to_vec(), lease: 0 }).await
        });
        wait_for_keys(&channel, b"free/", b"free0", 2).await;
        assert!(!second.is_finished(), "a second lock without a lease was granted while the first held it");
        lock.unlock(UnlockRequest { key: first.key.clone() }).await.expect("unlock");
        let second =
            tokio::time::timeout(DEADLINE, second).await.expect("granted").expect("task").expect("lock");
        let second = second.into_inner();
        assert_ne!(second.key, first.key);

        // A waiter that gives up: its place goes, and the lock passes to the next one.
        let lease = grant(&channel, 60).await;
        let mut cancelled = lock.clone();
        let gave_up = tokio::time::timeout(
            Duration::from_millis(300),
            cancelled.lock(LockRequest { name: b"free".to_vec(), lease }),
        )
        .await;
        assert!(gave_up.is_err(), "the waiter was granted while the lock was held");
        wait_for_keys(&channel, b"free/", b"free0", 1).await;
        lock.unlock(UnlockRequest { key: second.key }).await.expect("unlock");
        let mut next = lock.clone();
        let granted =
            tokio::time::timeout(DEADLINE, next.lock(LockRequest { name: b"free".to_vec(), lease: 0 }))
                .await
                .expect("the lock is free: the cancelled waiter left the queue")
                .expect("lock");
        assert!(granted.into_inner().key.starts_with(b"free/"));
    });
}
