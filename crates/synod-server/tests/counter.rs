//! The native counter (`synod.v1.Counter`) on real members: exactly once under lost replies,
//! retries and a killed leader; adds folded into shared entries; bad input refused with
//! nothing applied; and the counter seen as an ordinary key by etcd's tools.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::{Cluster, Server, wait_for};
use synod_api::etcdserverpb::kv_client::KvClient;
use synod_api::etcdserverpb::{PutRequest, RangeRequest};
use synod_api::synod::v1::counter_client::CounterClient;
use synod_api::synod::v1::{AddRequest, GetRequest};
use synod_client::{Client, Error, Options};
use tokio::time::Instant;
use tonic::Code;

/// How long the whole of a test's load may take.
const DEADLINE: Duration = Duration::from_secs(120);

/// One add as a client saw it: when it was called, when it returned, and what it returned.
#[derive(Clone, Copy, Debug)]
struct Observed {
    start: Instant,
    end: Instant,
    value: i64,
}

/// Checks a history of unit adds to one counter that started at 0: the values returned are
/// exactly 1..=n (each add has its own place, none applied twice, none lost), and they
/// respect real time (an add that returned before another was called has the smaller
/// value), which for unit adds is linearizability.
fn check_unit_adds(history: &mut [Observed]) {
    let n = history.len() as i64;
    let mut values: Vec<i64> = history.iter().map(|o| o.value).collect();
    values.sort_unstable();
    let expected: Vec<i64> = (1..=n).collect();
    if values != expected {
        let duplicates: Vec<i64> = values.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]).collect();
        panic!(
            "the {n} adds returned {} distinct values from {:?} to {:?}, duplicates {duplicates:?}",
            {
                let mut distinct = values.clone();
                distinct.dedup();
                distinct.len()
            },
            values.first(),
            values.last()
        );
    }
    // Sorted by end, with the largest value among the adds that ended so far.
    let mut by_end: Vec<(Instant, i64)> = history.iter().map(|o| (o.end, o.value)).collect();
    by_end.sort_by_key(|(end, _)| *end);
    let mut max_so_far = Vec::with_capacity(by_end.len());
    let mut max = i64::MIN;
    for (_, value) in &by_end {
        max = max.max(*value);
        max_so_far.push(max);
    }
    for add in history.iter() {
        let ended_before = by_end.partition_point(|(end, _)| *end < add.start);
        if ended_before > 0 {
            let earlier = max_so_far[ended_before - 1];
            assert!(
                earlier < add.value,
                "an add called after another returned {earlier} got {}: not linearizable",
                add.value
            );
        }
    }
}

fn endpoints(cluster: &Cluster) -> Vec<String> {
    cluster.members.iter().map(Server::endpoint).collect()
}

/// Many sessions add 1 at once on one hot key, a third of the replies are lost and retried
/// on another member, and the leader is killed with SIGKILL half-way: every add returns,
/// the final value is the number of adds, and the values returned are exactly the running
/// sums, in real-time order.
#[test]
fn adds_are_exactly_once_under_lost_replies_and_a_leader_kill() {
    const SESSIONS: usize = 24;
    const ADDS: usize = 40;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(dir.path(), 3, &[]);
    let leader = cluster.leader();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _entered = runtime.enter();
    let client = Client::connect(endpoints(&cluster)).expect("client");
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..SESSIONS)
        .map(|s| {
            let client = client.clone();
            let done = Arc::clone(&done);
            runtime.spawn(async move {
                let session = client.session().await.expect("open a session");
                let mut history = Vec::with_capacity(ADDS);
                for i in 0..ADDS {
                    // Every third reply is lost once, every seventh twice.
                    let lost = u32::from((s + i) % 3 == 0) + u32::from((s + i) % 7 == 0);
                    let start = Instant::now();
                    let added = session.add_losing_replies("hits", 1, lost).await.expect("add");
                    history.push(Observed { start, end: Instant::now(), value: added.value });
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                session.close().await;
                history
            })
        })
        .collect();
    let total = SESSIONS * ADDS;
    wait_for("a third of the adds", DEADLINE, || {
        (done.load(std::sync::atomic::Ordering::Relaxed) >= total / 3).then_some(())
    });
    cluster.members[leader].kill();
    let mut history: Vec<Observed> = runtime.block_on(async {
        let mut history = Vec::new();
        for task in tasks {
            let observed =
                tokio::time::timeout(DEADLINE, task).await.expect("the adds finish").expect("task");
            history.extend(observed);
        }
        history
    });
    assert_eq!(history.len(), total);
    check_unit_adds(&mut history);
    let value = runtime.block_on(client.get("hits")).expect("get");
    assert_eq!((value.value, value.exists), (total as i64, true), "the final value counts every add once");
}

/// A client given the followers first still sends its calls to the leader, and after the
/// leader is killed, to the new one.
#[test]
fn the_client_goes_to_the_leader_and_follows_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(dir.path(), 3, &[]);
    let leader = cluster.leader();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let entered = runtime.enter();
    // The leader's endpoint last: without looking for it the client would start on a follower.
    let mut order: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    order.push(leader);
    let client = Client::connect(order.iter().map(|i| cluster.members[*i].endpoint())).expect("client");
    let session = runtime.block_on(client.session()).expect("session");
    runtime.block_on(session.add("hits", 1)).expect("add");
    assert_eq!(client.preferred_endpoint(), cluster.members[leader].endpoint());

    cluster.members[leader].kill();
    runtime.block_on(session.add("hits", 1)).expect("an add after the leader died");
    drop(entered);
    let new = cluster.leader();
    // The add above may have found no leader yet and gone through a follower; a client
    // that knows no leader looks again before a call once 100 ms have passed since it
    // last looked, so within a few adds it is on the new leader.
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.preferred_endpoint() != cluster.members[new].endpoint() {
        assert!(
            Instant::now() < deadline,
            "the client still prefers {} 5 s after a new leader ({}) was elected",
            client.preferred_endpoint(),
            cluster.members[new].endpoint()
        );
        runtime.block_on(session.add("hits", 1)).expect("add");
    }
    drop(session);
}

/// Adds that arrive together share log entries: the key's version (one per write) grows by
/// far fewer than the adds, and each add still gets its own value.
#[test]
fn concurrent_adds_share_entries() {
    const ADDS: usize = 200;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::synod(dir.path());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = Client::connect([server.endpoint()]).expect("client");
        let session = Arc::new(client.session().await.expect("session"));
        let start = Instant::now();
        let adds = (0..ADDS).map(|_| {
            let session = Arc::clone(&session);
            tokio::spawn(async move {
                let begun = Instant::now();
                let added = session.add("shared", 1).await.expect("add");
                Observed { start: begun, end: Instant::now(), value: added.value }
            })
        });
        let mut history: Vec<Observed> =
            futures::future::join_all(adds).await.into_iter().map(|r| r.expect("task")).collect();
        assert!(start.elapsed() < DEADLINE);
        check_unit_adds(&mut history);
        let mut kv = KvClient::connect(server.endpoint()).await.expect("connect");
        let range = RangeRequest { key: b"shared".to_vec(), ..Default::default() };
        let kv = kv.range(range).await.expect("range").into_inner().kvs.remove(0);
        assert_eq!(kv.value, ADDS.to_string().into_bytes());
        assert!(
            (kv.version as usize) < ADDS / 2,
            "{ADDS} concurrent adds took {} writes of the key: they were not combined",
            kv.version
        );
    });
}

/// An add that would overflow fails with OutOfRange and a key that is not a number with
/// FailedPrecondition, saying so; neither changes anything. A session's retry after its
/// lease ended is refused, not applied again. etcd's KV sees the counter as a decimal.
#[test]
fn bad_adds_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::synod(dir.path());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut counter = CounterClient::connect(server.endpoint()).await.expect("connect");
        let mut kv = KvClient::connect(server.endpoint()).await.expect("connect");
        let add = |key: &str, delta: i64| AddRequest { key: key.into(), delta, ..Default::default() };

        let near_max = counter.add(add("big", i64::MAX - 1)).await.expect("add").into_inner();
        assert_eq!(near_max.value, i64::MAX - 1);
        let overflow = counter.add(add("big", 2)).await.expect_err("overflow");
        assert_eq!(overflow.code(), Code::OutOfRange);
        assert!(overflow.message().contains("overflow"), "{}", overflow.message());
        let big = counter.get(GetRequest { key: b"big".to_vec(), serializable: false }).await.expect("get");
        assert_eq!(big.into_inner().value, i64::MAX - 1, "a failed add changes nothing");

        let put = PutRequest { key: b"word".to_vec(), value: b"seven".to_vec(), ..Default::default() };
        let revision = kv.put(put).await.expect("put").into_inner().header.expect("header").revision;
        let not_number = counter.add(add("word", 1)).await.expect_err("not a number");
        assert_eq!(not_number.code(), Code::FailedPrecondition);
        assert_eq!(not_number.message(), "synod: counter: the key's value is not a decimal integer");
        let word =
            kv.range(RangeRequest { key: b"word".to_vec(), ..Default::default() }).await.expect("range");
        let word = word.into_inner();
        assert_eq!((word.kvs[0].value.as_slice(), word.kvs[0].mod_revision), (&b"seven"[..], revision));
        let empty_key = counter.add(add("", 1)).await.expect_err("empty key");
        assert_eq!(empty_key.code(), Code::InvalidArgument);
        let no_sequence = AddRequest { key: b"k".to_vec(), delta: 1, session: 7, ..Default::default() };
        assert_eq!(counter.add(no_sequence).await.expect_err("no sequence").code(), Code::InvalidArgument);

        // A session whose lease is gone: its adds are refused, and the client says the add
        // was not applied.
        let client =
            Client::with_options([server.endpoint()], Options { session_ttl_secs: 5, ..Options::default() })
                .expect("client");
        let session = client.session().await.expect("session");
        assert_eq!(session.add("c", 5).await.expect("add").value, 5);
        let revoke = synod_api::etcdserverpb::LeaseRevokeRequest { id: session.lease() };
        synod_api::etcdserverpb::lease_client::LeaseClient::connect(server.endpoint())
            .await
            .expect("connect")
            .lease_revoke(revoke)
            .await
            .expect("revoke");
        match session.add("c", 5).await {
            Err(Error::SessionEnded { maybe_applied: false }) => {}
            other => panic!("an add in an ended session returned {other:?}"),
        }
        let c = kv.range(RangeRequest { key: b"c".to_vec(), ..Default::default() }).await.expect("range");
        assert_eq!(c.into_inner().kvs[0].value, b"5");
    });
}
