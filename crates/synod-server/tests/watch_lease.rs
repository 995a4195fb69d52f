//! Watches and leases: against a real etcd where etcd defines the answer, and on their own
//! where synod promises more (leases across a leader kill, a slow watcher's memory).

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Cluster, Server, normalize};
use synod_api::etcdserverpb::kv_client::KvClient;
use synod_api::etcdserverpb::lease_client::LeaseClient;
use synod_api::etcdserverpb::watch_client::WatchClient;
use synod_api::etcdserverpb::watch_create_request::FilterType;
use synod_api::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseLeasesRequest,
    LeaseRevokeRequest, LeaseTimeToLiveRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
    WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse, request_op,
    watch_request,
};
use synod_api::mvccpb::event::EventType;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// How long a test waits for a response that must come.
const RESPONSE_DEADLINE: Duration = Duration::from_secs(10);

fn json<T: serde::Serialize>(value: &T) -> Value {
    let mut value = serde_json::to_value(value).expect("responses serialize");
    normalize(&mut value);
    value
}

fn outcome<T: serde::Serialize>(result: Result<tonic::Response<T>, tonic::Status>) -> Value {
    match result {
        Ok(response) => json(response.get_ref()),
        Err(status) => Value::String(format!("error {:?}: {}", status.code(), status.message())),
    }
}

fn create(request: WatchCreateRequest) -> WatchRequest {
    WatchRequest { request_union: Some(watch_request::RequestUnion::CreateRequest(request)) }
}

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest { key: key.into(), value: value.into(), ..Default::default() }
}

/// A Watch stream: requests go in through `send`, responses come out of `next`.
struct WatchStream {
    requests: mpsc::Sender<WatchRequest>,
    responses: tonic::Streaming<WatchResponse>,
}

impl WatchStream {
    /// Opens a stream with its first request: etcd sends the response headers only with
    /// its first response, so the call would not return before a request went out.
    async fn open(endpoint: &str, first: WatchRequest) -> WatchStream {
        let mut client = WatchClient::connect(endpoint.to_string()).await.expect("connect");
        let (requests, rx) = mpsc::channel(16);
        requests.send(first).await.expect("queue the first request");
        let call = client.watch(ReceiverStream::new(rx));
        let responses = tokio::time::timeout(RESPONSE_DEADLINE, call)
            .await
            .expect("watch stream opens in time")
            .expect("open watch stream")
            .into_inner();
        WatchStream { requests, responses }
    }

    async fn send(&self, request: WatchRequest) {
        self.requests.send(request).await.expect("watch stream open");
    }

    async fn next(&mut self) -> WatchResponse {
        match tokio::time::timeout(RESPONSE_DEADLINE, self.responses.message()).await {
            Ok(Ok(Some(response))) => response,
            other => panic!("no watch response within {RESPONSE_DEADLINE:?}: {other:?}"),
        }
    }

    async fn take(&mut self, count: usize) -> Vec<Value> {
        let mut taken = Vec::new();
        for _ in 0..count {
            taken.push(json(&self.next().await));
        }
        taken
    }
}

/// KV and Lease clients on one connection to `endpoint`.
async fn clients(endpoint: &str) -> (KvClient<Channel>, LeaseClient<Channel>) {
    let channel =
        Channel::from_shared(endpoint.to_string()).expect("endpoint").connect().await.expect("connect");
    (KvClient::new(channel.clone()), LeaseClient::new(channel))
}

/// The same writes on both servers: puts, a txn of three changes at one revision, a
/// prefix delete, a key attached to a lease that is revoked, and a compaction.
async fn write_history(endpoint: &str) {
    let (mut kv, mut lease) = clients(endpoint).await;
    kv.put(put("a", "1")).await.expect("put"); // 2
    kv.put(put("b", "1")).await.expect("put"); // 3
    kv.put(put("a", "2")).await.expect("put"); // 4
    let op = |r: request_op::Request| RequestOp { request: Some(r) };
    let txn = TxnRequest {
        compare: vec![],
        success: vec![
            op(request_op::Request::RequestPut(put("c", "1"))),
            op(request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                key: "b".into(),
                ..Default::default()
            })),
            op(request_op::Request::RequestPut(put("d", "1"))),
        ],
        failure: vec![],
    };
    kv.txn(txn).await.expect("txn"); // 5
    kv.put(put("x/1", "1")).await.expect("put"); // 6
    kv.put(put("x/2", "1")).await.expect("put"); // 7
    let prefix = DeleteRangeRequest { key: "x/".into(), range_end: "x0".into(), ..Default::default() };
    kv.delete_range(prefix).await.expect("delete"); // 8
    lease.lease_grant(LeaseGrantRequest { id: 7, ttl: 60 }).await.expect("grant");
    kv.put(PutRequest { lease: 7, ..put("l", "1") }).await.expect("put with lease"); // 9
    kv.put(put("d", "2")).await.expect("put"); // 10
    lease.lease_revoke(LeaseRevokeRequest { id: 7 }).await.expect("revoke"); // 11
    kv.compact(CompactionRequest { revision: 4, physical: true }).await.expect("compact");
}

/// What one watch stream sees for a series of create, cancel and progress requests after
/// the history above, and one live put.
async fn watch_session(endpoint: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    let all = |start_revision: i64| WatchCreateRequest {
        key: vec![0],
        range_end: vec![0],
        start_revision,
        ..Default::default()
    };
    // Replays from the history, each on its own stream so that responses cannot interleave.
    let replays = [
        // Compacted: created, then canceled with the compaction revision.
        (all(1), 2),
        (all(3), 2),
        // From the compaction revision on, every event, with previous values where kept.
        (WatchCreateRequest { prev_kv: true, ..all(4) }, 2),
        (
            WatchCreateRequest {
                key: "a".into(),
                range_end: "d".into(),
                start_revision: 5,
                ..Default::default()
            },
            2,
        ),
        (
            WatchCreateRequest {
                key: "a".into(),
                range_end: "z".into(),
                start_revision: 4,
                filters: vec![FilterType::Noput as i32],
                prev_kv: true,
                ..Default::default()
            },
            2,
        ),
        (
            WatchCreateRequest {
                key: "d".into(),
                start_revision: 2,
                filters: vec![FilterType::Nodelete as i32],
                ..Default::default()
            },
            2,
        ),
        (
            WatchCreateRequest {
                key: "x/".into(),
                range_end: "x0".into(),
                start_revision: 6,
                ..Default::default()
            },
            2,
        ),
    ];
    for (request, responses) in replays {
        let mut stream = WatchStream::open(endpoint, create(request)).await;
        seen.extend(stream.take(responses).await);
    }
    // Ids, refusals, cancel and progress on one stream, then a live event.
    let first = create(WatchCreateRequest { key: "k".into(), watch_id: 42, ..Default::default() });
    let mut stream = WatchStream::open(endpoint, first).await;
    stream.send(create(WatchCreateRequest { key: "k".into(), watch_id: 42, ..Default::default() })).await;
    stream
        .send(create(WatchCreateRequest { key: "k".into(), range_end: "a".into(), ..Default::default() }))
        .await;
    stream.send(create(WatchCreateRequest { key: "k".into(), prev_kv: true, ..Default::default() })).await;
    stream.send(create(WatchCreateRequest { key: "k".into(), ..Default::default() })).await;
    seen.extend(stream.take(5).await);
    let cancel = WatchCancelRequest { watch_id: 42 };
    stream
        .send(WatchRequest { request_union: Some(watch_request::RequestUnion::CancelRequest(cancel)) })
        .await;
    seen.extend(stream.take(1).await);
    let progress = WatchProgressRequest {};
    stream
        .send(WatchRequest { request_union: Some(watch_request::RequestUnion::ProgressRequest(progress)) })
        .await;
    seen.extend(stream.take(1).await);
    let mut client = kv_at(endpoint).await;
    client.put(put("k", "live")).await.expect("put");
    client.put(put("k", "again")).await.expect("put");
    // Two watchers on "k" (ids 0 and 1) see both puts; each put is one response per watcher.
    let mut live = stream.take(4).await;
    live.sort_by_key(|v| v["watch_id"].as_str().map(str::to_string));
    seen.extend(live);
    seen
}

async fn kv_at(endpoint: &str) -> KvClient<Channel> {
    KvClient::connect(endpoint.to_string()).await.expect("connect")
}

/// Replays from past revisions (with prev_kv, filters, ranges and prefixes), a compacted
/// start revision, client-chosen and duplicate watch ids, an empty range, cancel, progress
/// and live events: synod answers each watch exactly as etcd does.
#[test]
fn watch_matches_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(etcd) = Server::etcd(dir.path()) else { return };
    let synod = Server::synod(dir.path());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        write_history(&etcd.endpoint()).await;
        write_history(&synod.endpoint()).await;
        let expected = watch_session(&etcd.endpoint()).await;
        let actual = watch_session(&synod.endpoint()).await;
        assert_eq!(expected.len(), actual.len());
        for (i, (e, a)) in expected.iter().zip(&actual).enumerate() {
            assert_eq!(a, e, "watch response {i} differs:\nsynod {a}\netcd  {e}");
        }
    });
}

/// What a lease session answers: grants (a TTL below the minimum, an id in use, a TTL too
/// large), keys attached, TimeToLive with keys and for an unknown lease, Leases, renewals
/// of known and unknown leases, revocation deleting the keys, and a second revocation.
async fn lease_session(endpoint: &str) -> Vec<Value> {
    let (mut kv, mut lease) = clients(endpoint).await;
    let mut seen = Vec::new();
    seen.push(outcome(lease.lease_grant(LeaseGrantRequest { id: 100, ttl: 1 }).await));
    seen.push(outcome(lease.lease_grant(LeaseGrantRequest { id: 100, ttl: 60 }).await));
    seen.push(outcome(lease.lease_grant(LeaseGrantRequest { id: 101, ttl: 9_000_000_001 }).await));
    seen.push(outcome(lease.lease_grant(LeaseGrantRequest { id: 102, ttl: 60 }).await));
    seen.push(outcome(kv.put(PutRequest { lease: 999, ..put("k0", "v") }).await));
    seen.push(outcome(kv.put(PutRequest { lease: 102, ..put("k1", "v") }).await));
    seen.push(outcome(kv.put(PutRequest { lease: 102, ..put("k2", "v") }).await));
    seen.push(outcome(kv.put(PutRequest { lease: 100, ..put("k3", "v") }).await));
    // The remaining TTL depends on timing, and etcd lists keys in Go's map order; the rest
    // must match.
    let mut ttl = outcome(lease.lease_time_to_live(LeaseTimeToLiveRequest { id: 102, keys: true }).await);
    if let Some(keys) = ttl["keys"].as_array_mut() {
        keys.sort_by_key(|k| k.as_str().map(str::to_string));
    }
    let remaining = ttl["TTL"].as_str().and_then(|t| t.parse::<i64>().ok()).expect("a remaining TTL");
    assert!((58..=60).contains(&remaining), "remaining TTL {remaining} of a fresh 60 s lease");
    ttl.as_object_mut().expect("object").remove("TTL");
    seen.push(ttl);
    seen.push(outcome(lease.lease_time_to_live(LeaseTimeToLiveRequest { id: 555, keys: true }).await));
    let mut leases = outcome(lease.lease_leases(LeaseLeasesRequest {}).await);
    if let Some(list) = leases["leases"].as_array_mut() {
        list.sort_by_key(|l| l["ID"].as_str().map(str::to_string));
    }
    seen.push(leases);
    let (requests, rx) = mpsc::channel(4);
    requests.send(LeaseKeepAliveRequest { id: 102 }).await.expect("queue");
    let mut renewals =
        lease.lease_keep_alive(ReceiverStream::new(rx)).await.expect("keep-alive stream").into_inner();
    seen.push(json(&renewals.message().await.expect("renewal").expect("a response")));
    requests.send(LeaseKeepAliveRequest { id: 555 }).await.expect("queue");
    seen.push(json(&renewals.message().await.expect("renewal").expect("a response")));
    seen.push(outcome(lease.lease_revoke(LeaseRevokeRequest { id: 102 }).await));
    seen.push(outcome(
        kv.range(RangeRequest { key: "k".into(), range_end: "l".into(), ..Default::default() }).await,
    ));
    seen.push(outcome(lease.lease_revoke(LeaseRevokeRequest { id: 102 }).await));
    seen.push(outcome(lease.lease_time_to_live(LeaseTimeToLiveRequest { id: 102, keys: false }).await));
    // A server-chosen id: positive, and usable.
    let granted = lease.lease_grant(LeaseGrantRequest { id: 0, ttl: 30 }).await.expect("grant").into_inner();
    assert!(granted.id > 0, "server-chosen lease id {}", granted.id);
    seen.push(outcome(kv.put(PutRequest { lease: granted.id, ..put("k4", "v") }).await));
    seen
}

/// The Lease service answers as etcd's does, errors included.
#[test]
fn lease_api_matches_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(etcd) = Server::etcd(dir.path()) else { return };
    let synod = Server::synod(dir.path());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let expected = lease_session(&etcd.endpoint()).await;
        let actual = lease_session(&synod.endpoint()).await;
        assert_eq!(expected.len(), actual.len());
        for (i, (e, a)) in expected.iter().zip(&actual).enumerate() {
            assert_eq!(a, e, "lease answer {i} differs:\nsynod {a}\netcd  {e}");
        }
    });
}

/// Waits for the DELETE event of `key` on a watch stream and returns when it came.
async fn deleted_at(stream: &mut WatchStream, key: &str, deadline: Duration) -> Instant {
    let until = Instant::now() + deadline;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let response = match tokio::time::timeout(left, stream.responses.message()).await {
            Ok(Ok(Some(response))) => response,
            other => panic!("no delete of {key} within {deadline:?}: {other:?}"),
        };
        let now = Instant::now();
        let deleted = response.events.iter().any(|e| {
            e.r#type == EventType::Delete as i32 && e.kv.as_ref().is_some_and(|kv| kv.key == key.as_bytes())
        });
        if deleted {
            return now;
        }
    }
}

/// A lease nobody renews ends its key one TTL after the grant; one renewed every half
/// second lives on, and ends one TTL after its last renewal. Measured the same way on
/// etcd and synod; both must expire no earlier than the deadline and within a second and a
/// half after it (etcd looks for expired leases every 500 ms).
#[test]
fn lease_expiry_and_keep_alive_timing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = Server::etcd(dir.path());
    let synod = Server::synod(dir.path());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut servers = vec![("synod", synod.endpoint())];
        servers.extend(etcd.as_ref().map(|e| ("etcd", e.endpoint())));
        let checks =
            servers.into_iter().map(|(name, endpoint)| async move { (name, expiry_timing(&endpoint).await) });
        for (name, (unrenewed, renewed)) in futures::future::join_all(checks).await {
            for (what, late) in [("unrenewed", unrenewed), ("renewed", renewed)] {
                assert!(late >= Duration::ZERO, "{name}: the {what} lease expired early");
                assert!(late < Duration::from_millis(1500), "{name}: the {what} lease expired {late:?} late");
            }
        }
    });
}

/// How late after their deadlines an unrenewed and a renewed 2 s lease expire; panics if
/// either expires before its deadline.
async fn expiry_timing(endpoint: &str) -> (Duration, Duration) {
    let (mut kv, mut lease) = clients(endpoint).await;
    let watch = WatchCreateRequest { key: "t/".into(), range_end: "t0".into(), ..Default::default() };
    let mut stream = WatchStream::open(endpoint, create(watch)).await;
    stream.next().await; // created

    // Renewed every half second for three seconds, then left to expire.
    lease.lease_grant(LeaseGrantRequest { id: 2, ttl: 2 }).await.expect("grant");
    kv.put(PutRequest { lease: 2, ..put("t/renewed", "v") }).await.expect("put");
    let (requests, rx) = mpsc::channel(4);
    let mut last_sent = Instant::now();
    let renewing_until = last_sent + Duration::from_secs(3);
    requests.send(LeaseKeepAliveRequest { id: 2 }).await.expect("queue");
    let mut renewals =
        lease.lease_keep_alive(ReceiverStream::new(rx)).await.expect("keep-alive").into_inner();
    loop {
        let renewal = renewals.message().await.expect("renewal").expect("a response");
        assert_eq!(renewal.ttl, 2, "{endpoint}: a renewal of a live lease answers its TTL");
        if Instant::now() >= renewing_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        last_sent = Instant::now();
        requests.send(LeaseKeepAliveRequest { id: 2 }).await.expect("queue");
    }
    let mut get =
        kv.range(RangeRequest { key: "t/renewed".into(), ..Default::default() }).await.expect("get");
    assert_eq!(get.get_mut().count, 1, "{endpoint}: the renewed lease's key is gone while renewed");
    let renewed = deleted_at(&mut stream, "t/renewed", RESPONSE_DEADLINE).await;
    let renewed_late = renewed.checked_duration_since(last_sent + Duration::from_secs(2));

    let before_grant = Instant::now();
    lease.lease_grant(LeaseGrantRequest { id: 1, ttl: 2 }).await.expect("grant");
    kv.put(PutRequest { lease: 1, ..put("t/unrenewed", "v") }).await.expect("put");
    let unrenewed = deleted_at(&mut stream, "t/unrenewed", RESPONSE_DEADLINE).await;
    let unrenewed_late = unrenewed.checked_duration_since(before_grant + Duration::from_secs(2));
    (
        unrenewed_late.unwrap_or_else(|| panic!("{endpoint}: the unrenewed lease expired early")),
        renewed_late.unwrap_or_else(|| panic!("{endpoint}: the renewed lease expired early")),
    )
}

/// The leader is killed while two 10 s leases are live: one nobody renews, one renewed
/// once, half a second before the kill. Neither may expire before the deadline its holder
/// was told (grant or renewal time plus TTL); neither may outlive it by more than the
/// checkpoint interval plus the failover (here 3.5 s in all). etcd, which gives every lease
/// a fresh TTL when a new leader takes over, ends the unrenewed one about 5 s late here.
#[test]
fn leases_keep_their_deadlines_when_the_leader_dies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(dir.path(), 3, &["--experimental-lease-checkpoint-interval", "500ms"]);
    let leader = cluster.leader();
    let follower = (leader + 1) % 3;
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let ttl = Duration::from_secs(10);
    let (unrenewed_deadline, renewed_deadline, mut stream) = runtime.block_on(async {
        let (mut kv, mut lease) = clients(&cluster.members[leader].endpoint()).await;
        let watch =
            WatchCreateRequest { key: "held/".into(), range_end: "held0".into(), ..Default::default() };
        let mut stream = WatchStream::open(&cluster.members[follower].endpoint(), create(watch)).await;
        stream.next().await; // created

        let granted = Instant::now();
        for id in [1, 2] {
            lease.lease_grant(LeaseGrantRequest { id, ttl: ttl.as_secs() as i64 }).await.expect("grant");
            kv.put(PutRequest { lease: id, ..put(&format!("held/{id}"), "v") }).await.expect("put");
        }
        // Long enough for checkpoints to be written, short of the TTL.
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let renewed = Instant::now();
        let (requests, rx) = mpsc::channel(1);
        requests.send(LeaseKeepAliveRequest { id: 2 }).await.expect("queue");
        let mut renewals =
            lease.lease_keep_alive(ReceiverStream::new(rx)).await.expect("keep-alive").into_inner();
        let renewal = renewals.message().await.expect("renewal").expect("a response");
        assert_eq!(renewal.ttl, ttl.as_secs() as i64);
        tokio::time::sleep(Duration::from_millis(500)).await;
        (granted + ttl, renewed + ttl, stream)
    });
    cluster.members[leader].kill();
    let killed = Instant::now();
    runtime.block_on(async {
        let slack = Duration::from_millis(3500);
        let first = deleted_at(&mut stream, "held/1", ttl + slack).await;
        assert!(
            first >= unrenewed_deadline,
            "the unrenewed lease expired {:?} early",
            unrenewed_deadline - first
        );
        assert!(
            first <= unrenewed_deadline + slack,
            "the unrenewed lease expired {:?} after its deadline (the leader died {:?} before it)",
            first - unrenewed_deadline,
            unrenewed_deadline - killed
        );
        let second = deleted_at(&mut stream, "held/2", ttl + slack).await;
        assert!(
            second >= renewed_deadline,
            "the renewed lease expired {:?} early",
            renewed_deadline - second
        );
        assert!(
            second <= renewed_deadline + slack,
            "the renewed lease expired {:?} after its deadline",
            second - renewed_deadline
        );
    });
}

/// Resident memory of a process, from /proc.
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc status");
    kib * 1024
}

/// A watcher whose client stops reading while 160 MiB of events are written: the member
/// serving it holds no more memory than one serving no watcher at all, give or take the
/// event ring and a few responses in flight; once the client reads again, it gets every
/// revision, in order, caught up from storage.
#[test]
fn a_slow_watcher_holds_bounded_memory_and_catches_up() {
    const PUTS: usize = 160;
    const VALUE_BYTES: usize = 1024 * 1024;
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["watched", "unwatched"] {
        std::fs::create_dir(dir.path().join(name)).expect("create a server dir");
    }
    let watched = Server::synod_with(&dir.path().join("watched"), &["--quota-backend-bytes", "-1"]);
    let unwatched = Server::synod_with(&dir.path().join("unwatched"), &["--quota-backend-bytes", "-1"]);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let watch = WatchCreateRequest { key: "big/".into(), range_end: "big0".into(), ..Default::default() };
        let mut stalled = WatchStream::open(&watched.endpoint(), create(watch)).await;
        let created = stalled.next().await;
        assert!(created.created);
        let value = vec![b'v'; VALUE_BYTES];
        let write = |endpoint: String| {
            let value = value.clone();
            async move {
                let mut kv = kv_at(&endpoint).await;
                for i in 0..PUTS {
                    let request = PutRequest { key: format!("big/{i:04}").into(), value: value.clone(), ..Default::default() };
                    kv.put(request).await.expect("put");
                }
            }
        };
        futures::future::join(write(watched.endpoint()), write(unwatched.endpoint())).await;
        let (with, without) = (resident_bytes(watched.pid()), resident_bytes(unwatched.pid()));
        let extra = with.saturating_sub(without);
        assert!(
            extra < 48 * 1024 * 1024,
            "the member with a stalled watcher holds {} MiB more than one without ({} MiB vs {} MiB) after {} MiB of events",
            extra >> 20,
            with >> 20,
            without >> 20,
            (PUTS * VALUE_BYTES) >> 20
        );
        let mut next = created.header.expect("header").revision + 1;
        let mut seen = 0;
        while seen < PUTS {
            let response = stalled.next().await;
            for event in &response.events {
                let kv = event.kv.as_ref().expect("kv");
                assert_eq!(kv.mod_revision, next, "events arrive in revision order without gaps");
                assert_eq!(kv.key, format!("big/{seen:04}").into_bytes());
                assert_eq!(kv.value.len(), VALUE_BYTES);
                next += 1;
                seen += 1;
            }
        }
    });
}

/// A running etcdctl whose output lines arrive on a channel; killed when dropped.
struct Running {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Running {
    fn start(program: &std::path::Path, endpoints: &str, args: &[&str]) -> Running {
        use std::io::BufRead;
        let mut child = std::process::Command::new(program)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn etcdctl");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    /// The next `count` lines, waiting at most the response deadline for each.
    fn lines(&self, count: usize) -> Vec<String> {
        (0..count)
            .map(|_| {
                self.lines
                    .recv_timeout(RESPONSE_DEADLINE)
                    .unwrap_or_else(|e| panic!("etcdctl printed no line within {RESPONSE_DEADLINE:?}: {e}"))
            })
            .collect()
    }

    /// Sends SIGINT, as a user's Ctrl-C, and waits for the exit.
    fn interrupt(&mut self) {
        let pid = self.child.id().to_string();
        std::process::Command::new("kill").args(["-INT", &pid]).status().expect("kill -INT");
        support::wait_for("etcdctl to exit after SIGINT", RESPONSE_DEADLINE, || {
            self.child.try_wait().ok().flatten()
        });
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// etcdctl watch (a replay with prev_kv, then live events), lease, lock, alarm, snapshot
/// save and elect against a 3-member synod cluster, each command through a different
/// member: the watch output is etcd's, line for line, and the lock and election recipes
/// exclude and hand over as they do on etcd.
#[test]
fn etcdctl_watch_lease_lock_and_elect_on_a_cluster() {
    let Some(program) = support::interop_program("etcdctl") else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(etcd) = Server::etcd(dir.path()) else { return };
    let cluster = Cluster::start(dir.path(), 3, &[]);
    let endpoint = |i: usize| cluster.members[i].address();
    let ctl = |address: &str, args: &[&str]| {
        support::etcdctl(&program, &[&[format!("--endpoints={address}").as_str()][..], args].concat())
    };

    // watch: the same writes, then a replay from revision 2 with previous values and a live put.
    let watch_output = |address: &str| {
        for (key, value) in [("w/a", "1"), ("w/b", "1"), ("w/a", "2")] {
            ctl(address, &["put", key, value]);
        }
        ctl(address, &["del", "w/b"]);
        let watch = Running::start(&program, address, &["watch", "--prefix", "--prev-kv", "--rev=2", "w/"]);
        let mut lines = watch.lines(16);
        ctl(address, &["put", "w/c", "live"]);
        lines.extend(watch.lines(3));
        lines
    };
    assert_eq!(watch_output(&endpoint(0)), watch_output(&etcd.address()));

    // lease: granted on one member, used and inspected on the others, revoked with its key.
    let granted = ctl(&endpoint(0), &["lease", "grant", "30"]);
    let id = granted.split_whitespace().nth(1).expect("lease id").to_string();
    assert_eq!(granted.trim(), format!("lease {id} granted with TTL(30s)"));
    ctl(&endpoint(1), &["put", "--lease", &id, "leased", "v"]);
    let alive = ctl(&endpoint(2), &["lease", "keep-alive", "--once", &id]);
    assert_eq!(alive.trim(), format!("lease {id} keepalived with TTL(30)"));
    let ttl = ctl(&endpoint(1), &["lease", "timetolive", "--keys", &id]);
    assert!(ttl.starts_with(&format!("lease {id} granted with TTL(30s), remaining(")), "{ttl}");
    assert!(ttl.trim().ends_with("attached keys([leased])"), "{ttl}");
    assert!(ctl(&endpoint(2), &["lease", "list"]).contains(&id));
    assert_eq!(ctl(&endpoint(2), &["lease", "revoke", &id]).trim(), format!("lease {id} revoked"));
    assert_eq!(ctl(&endpoint(0), &["get", "leased"]), "");

    // lock: the second holder gets the lock only when the first lets go, with a later
    // revision (a fencing token).
    let mut first = Running::start(&program, &endpoint(0), &["lock", "door"]);
    let first_key = first.lines(1).remove(0);
    let second = Running::start(&program, &endpoint(1), &["lock", "door"]);
    support::wait_for("both contenders to queue", RESPONSE_DEADLINE, || {
        let waiting = ctl(&endpoint(2), &["get", "--prefix", "door/", "--keys-only"]);
        (waiting.lines().filter(|l| !l.is_empty()).count() == 2).then_some(())
    });
    assert!(second.lines.try_recv().is_err(), "the second contender holds the lock while the first does");
    first.interrupt();
    let second_key = second.lines(1).remove(0);
    assert_ne!(first_key, second_key);
    assert!(second_key.starts_with("door/"));

    // alarm: none raised, and disarming none is quiet, as on etcd.
    assert_eq!(ctl(&endpoint(1), &["alarm", "list"]), "");
    assert_eq!(ctl(&endpoint(2), &["alarm", "disarm"]), "");

    // snapshot save through one member, and etcdctl reads the file as an etcd snapshot.
    let file = dir.path().join("cluster.db");
    let (_, saved) = support::etcdctl_output(
        &program,
        &[&format!("--endpoints={}", endpoint(2)), "snapshot", "save", &file.display().to_string()],
    );
    assert!(saved.contains("saved"), "{saved}");
    let status =
        support::etcdctl(&program, &["snapshot", "status", "-w", "json", &file.display().to_string()]);
    let status: Value = serde_json::from_str(status.trim()).expect("status JSON");
    assert!(status["revision"].as_i64().is_some_and(|r| r > 1), "{status}");

    // elect: alice leads; bob waits; the observer sees alice, then bob once alice resigns.
    let mut alice = Running::start(&program, &endpoint(0), &["elect", "council", "alice"]);
    assert_eq!(alice.lines(2)[1], "alice");
    let bob = Running::start(&program, &endpoint(1), &["elect", "council", "bob"]);
    let observer = Running::start(&program, &endpoint(2), &["elect", "--listen", "council"]);
    assert_eq!(observer.lines(2)[1], "alice");
    alice.interrupt();
    assert_eq!(bob.lines(2)[1], "bob");
    assert_eq!(observer.lines(2)[1], "bob");
}

/// With `--auto-compaction-mode periodic --auto-compaction-retention 2s`, the leader
/// compacts to a revision the store had at least two seconds earlier, and goes on doing so.
#[test]
fn periodic_auto_compaction_keeps_the_retention_period() {
    let dir = tempfile::tempdir().expect("tempdir");
    let synod = Server::synod_with(
        dir.path(),
        &["--auto-compaction-mode", "periodic", "--auto-compaction-retention", "2s"],
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut kv = kv_at(&synod.endpoint()).await;
        let mut maintenance =
            synod_api::etcdserverpb::maintenance_client::MaintenanceClient::connect(synod.endpoint())
                .await
                .expect("connect");
        // (when, revision) of every write, to know what the store had when.
        let mut written: Vec<(Instant, i64)> = Vec::new();
        let start = Instant::now();
        let mut compactions = Vec::new();
        while compactions.len() < 2 {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "two auto-compactions within 20 s: {compactions:?}"
            );
            let response = kv.put(put("churn", "v")).await.expect("put").into_inner();
            written.push((Instant::now(), response.header.expect("header").revision));
            let hash = maintenance
                .hash_kv(synod_api::etcdserverpb::HashKvRequest { revision: 0 })
                .await
                .expect("hash kv")
                .into_inner();
            let now = Instant::now();
            if hash.compact_revision > 0 && compactions.last() != Some(&hash.compact_revision) {
                // The compaction revision was current two seconds ago or earlier: every
                // revision written in the last two seconds (less the time a reply takes)
                // is above it.
                let recent =
                    written.iter().filter(|(at, _)| now.duration_since(*at) < Duration::from_millis(1900));
                for (_, revision) in recent {
                    assert!(
                        *revision > hash.compact_revision,
                        "compacted to {} while {revision} is recent",
                        hash.compact_revision
                    );
                }
                compactions.push(hash.compact_revision);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(compactions[1] > compactions[0]);
    });
}

/// A compaction's records are deleted after it answers, a batch at a time: the bytes in use
/// (Status's dbSizeInUse) fall to what the kept revisions hold. A physical compaction
/// answers only once they are gone, as etcd's does, and the deletions outlive a restart.
#[test]
fn compacted_records_are_deleted_in_the_background() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut synod = Server::synod(dir.path());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let in_use = |endpoint: String| async move {
        let mut maintenance =
            synod_api::etcdserverpb::maintenance_client::MaintenanceClient::connect(endpoint)
                .await
                .expect("connect");
        let status = maintenance.status(synod_api::etcdserverpb::StatusRequest {}).await.expect("status");
        status.into_inner().db_size_in_use
    };
    let value = "v".repeat(1024);
    // Puts of 10 keys, 2,500 of them and then 2,500 more; a compaction after each round
    // drops 2,500 records, three batches.
    let mut kv = runtime.block_on(kv_at(&synod.endpoint()));
    let puts = |kv: &mut KvClient<Channel>| {
        runtime.block_on(async {
            let mut revision = 0;
            for i in 0..2500 {
                let response = kv.put(put(&format!("k{}", i % 10), &value)).await.expect("put").into_inner();
                revision = response.header.expect("header").revision;
            }
            revision
        })
    };
    let revision = puts(&mut kv);
    let before = runtime.block_on(in_use(synod.endpoint()));
    assert!(before > 2500 * 1024, "2,500 values of 1 KiB are in use: {before}");
    runtime.block_on(kv.compact(CompactionRequest { revision, physical: false })).expect("compact");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = runtime.block_on(in_use(synod.endpoint()));
        if now < 100 * 1024 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bytes in use still {now} (of {before}) 20 s after the compaction"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let revision = puts(&mut kv);
    let physical = kv.compact(CompactionRequest { revision, physical: true });
    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(20), physical).await })
        .expect("a physical compaction answers within 20 s")
        .expect("compact");
    let after = runtime.block_on(in_use(synod.endpoint()));
    assert!(after < 100 * 1024, "a physical compaction answered with {after} bytes in use");
    synod.terminate();
    synod.start();
    runtime.block_on(async {
        assert_eq!(in_use(synod.endpoint()).await, after, "the deletions outlive a restart");
        let mut kv = kv_at(&synod.endpoint()).await;
        let response =
            kv.range(RangeRequest { key: b"k3".to_vec(), ..Default::default() }).await.expect("get");
        assert_eq!(response.into_inner().header.expect("header").revision, revision);
    });
}

/// Posts `body` to the JSON gateway at `address` and returns the JSON objects of the
/// response body (one for a unary call, one per line for a stream), reading until `count`
/// objects arrived or the server closed the response.
fn gateway(address: &str, path: &str, body: &str, count: usize) -> Vec<Value> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(RESPONSE_DEADLINE)).expect("read timeout");
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send request");
    let mut raw = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let objects = gateway_objects(&raw);
        if objects.len() >= count {
            return objects;
        }
        match stream.read(&mut buffer) {
            Ok(0) => return objects,
            Ok(n) => raw.extend_from_slice(&buffer[..n]),
            Err(e) => panic!(
                "{path}: no complete response within {RESPONSE_DEADLINE:?} ({e}): {}",
                String::from_utf8_lossy(&raw)
            ),
        }
    }
}

/// The JSON objects in an HTTP response read so far: the body's lines, chunked or not,
/// with ids and terms removed.
fn gateway_objects(raw: &[u8]) -> Vec<Value> {
    let text = String::from_utf8_lossy(raw);
    let Some((_, body)) = text.split_once("\r\n\r\n") else { return Vec::new() };
    // Chunk-size lines are hex numbers; every JSON object is on a line of its own.
    body.split(['\r', '\n'])
        .filter(|line| line.starts_with('{'))
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .map(|mut value| {
            normalize(&mut value);
            value
        })
        .collect()
}

/// The JSON gateway's lease routes and its watch stream answer as etcd's do.
#[test]
fn gateway_lease_and_watch_match_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(etcd) = Server::etcd(dir.path()) else { return };
    let synod = Server::synod(dir.path());
    let session = |address: &str| {
        let mut seen = Vec::new();
        seen.extend(gateway(address, "/v3/lease/grant", r#"{"TTL":60,"ID":200}"#, 1));
        seen.extend(gateway(address, "/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy","lease":"200"}"#, 1));
        seen.extend(gateway(address, "/v3/kv/lease/leases", "", 1));
        seen.extend(gateway(address, "/v3/lease/keepalive", r#"{"ID":200} {"ID":201}"#, 2));
        let mut ttl = gateway(address, "/v3/lease/timetolive", r#"{"ID":200,"keys":true}"#, 1);
        ttl[0].as_object_mut().expect("object").remove("TTL");
        seen.extend(ttl);
        let watch = r#"{"create_request":{"key":"Zm9v","start_revision":1,"prev_kv":true}}"#;
        seen.extend(gateway(address, "/v3/watch", watch, 2));
        seen.extend(gateway(address, "/v3/kv/lease/revoke", r#"{"ID":200}"#, 1));
        seen.extend(gateway(address, "/v3/lease/revoke", r#"{"ID":200}"#, 1));
        seen.extend(gateway(
            address,
            "/v3/watch",
            r#"{"create_request":{"key":"Zm9v","range_end":"YQ=="}}"#,
            1,
        ));
        seen
    };
    let expected = session(&etcd.address());
    let actual = session(&synod.address());
    assert_eq!(expected.len(), actual.len(), "synod {actual:#?}\netcd {expected:#?}");
    for (i, (e, a)) in expected.iter().zip(&actual).enumerate() {
        assert_eq!(a, e, "gateway answer {i} differs:\nsynod {a}\netcd  {e}");
    }
}

/// A watcher on one member of a 3-member cluster while writes go on through another: the
/// member serving the watch is killed (it was the leader), and the client resumes on a
/// third member from the revision after the last one it saw, as etcd's clients do. It sees
/// every revision exactly once, in order, with the values written.
#[test]
fn a_watch_resumes_on_another_member_after_a_kill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(dir.path(), 3, &[]);
    let watched = cluster.leader();
    let writer = (watched + 1) % 3;
    let resumed = (watched + 2) % 3;
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    const WRITES: i64 = 300;
    let writer_endpoint = cluster.members[writer].endpoint();
    let watch = WatchCreateRequest { key: "seq".into(), ..Default::default() };
    let (mut seen, watched_from, writes) = runtime.block_on(async {
        let mut stream = WatchStream::open(&cluster.members[watched].endpoint(), create(watch)).await;
        let created = stream.next().await;
        // The writes begin once the watch exists, so that it can see every one of them.
        let writes = tokio::spawn(async move {
            let mut kv = kv_at(&writer_endpoint).await;
            let mut written = Vec::new();
            let mut i = 0;
            while (written.len() as i64) < WRITES {
                // Writes during the election fail with etcd's Unavailable errors; the writer
                // goes on with the next value.
                if let Ok(reply) = kv.put(put("seq", &format!("{i}"))).await {
                    written.push((reply.into_inner().header.expect("header").revision, format!("{i}")));
                }
                i += 1;
            }
            written
        });
        let mut seen: Vec<(i64, String)> = Vec::new();
        while seen.len() < 50 {
            for event in stream.next().await.events {
                let kv = event.kv.expect("kv");
                seen.push((kv.mod_revision, String::from_utf8(kv.value).expect("utf-8")));
            }
        }
        (seen, created.header.expect("header").revision, writes)
    });
    cluster.members[watched].kill();
    let last = seen.last().expect("events").0;
    runtime.block_on(async {
        let resume = WatchCreateRequest { key: "seq".into(), start_revision: last + 1, ..Default::default() };
        let mut stream = WatchStream::open(&cluster.members[resumed].endpoint(), create(resume)).await;
        stream.next().await; // created
        let written = writes.await.expect("writer");
        let newest = written.last().expect("writes").0;
        while seen.last().expect("events").0 < newest {
            for event in stream.next().await.events {
                let kv = event.kv.expect("kv");
                seen.push((kv.mod_revision, String::from_utf8(kv.value).expect("utf-8")));
            }
        }
        // Every revision since the watch began, once, in order (only the writer writes, so
        // there is no gap), and every acknowledged write among them with its value; a write
        // whose reply was lost in the election appears too.
        let revisions: Vec<i64> = seen.iter().map(|(r, _)| *r).collect();
        let expected: Vec<i64> = (watched_from + 1..=newest).collect();
        assert_eq!(revisions, expected, "the watch skipped or repeated revisions");
        for write in &written {
            assert!(seen.contains(write), "the watch missed {write:?}");
        }
    });
}
