//! Metrics that tell the truth, on a real 3-member cluster: every series etcd's official
//! mixin queries is on the page with etcd's name and labels, and each moves when its event
//! happens (a put, a failed read, a watch and a keep-alive stream, fsyncs and checkpoints,
//! peer traffic and probes, a leader kill, a proposal that cannot commit); synod's own
//! series move with counter adds and lock waits; and Debian's promtool finds nothing on the
//! page that it does not find on etcd's own.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use support::{Cluster, START_DEADLINE, Server, http, interop_program, wait_for};
use synod_api::etcdserverpb::kv_client::KvClient;
use synod_api::etcdserverpb::lease_client::LeaseClient;
use synod_api::etcdserverpb::watch_client::WatchClient;
use synod_api::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, PutRequest, RangeRequest, WatchCreateRequest, WatchRequest,
    watch_request,
};
use synod_api::v3lockpb::LockRequest;
use synod_api::v3lockpb::lock_client::LockClient;

/// One sample of a scraped page: the name, the labels, the value.
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

fn parse(page: &str) -> Vec<Sample> {
    page.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a value: {line}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap_or_else(|| panic!("a label: {line}"));
                    (key.to_string(), value.trim_matches('"').to_string())
                })
                .collect();
            Sample { name: name.to_string(), labels, value }
        })
        .collect()
}

/// The sum of the samples named `name` that carry every label in `with`; `None` when the
/// page has no such sample.
fn value(page: &str, name: &str, with: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = parse(page)
        .into_iter()
        .filter(|s| {
            s.name == name && with.iter().all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|s| s.value)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

fn scrape(server: &Server) -> String {
    let (status, page) = http(&server.address(), "GET", "/metrics", "", "");
    assert_eq!(status, 200);
    page
}

fn now(server: &Server, name: &str, with: &[(&str, &str)]) -> f64 {
    value(&scrape(server), name, with).unwrap_or(0.0)
}

/// Waits until the series on `server` is above `before`.
fn moves(server: &Server, name: &str, with: &[(&str, &str)], before: f64) -> f64 {
    wait_for(&format!("{name}{with:?} on {} to rise above {before}", server.name), START_DEADLINE, || {
        let value = now(server, name, with);
        (value > before).then_some(value)
    })
}

/// A runtime whose tasks (a client's connections among them) go on between `block_on`s,
/// so a dropped client really goes away.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime")
}

/// Every series of the mixin (alerts and dashboard) exists, and each moves with its event.
#[test]
fn the_mixins_series_move_with_their_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), 3, &["--metrics=extensive"]);
    let leader = cluster.leader();
    let follower = (leader + 1) % 3;
    let runtime = runtime();
    let m = &cluster.members[follower];

    // A put through a follower: the gRPC series on it, fsyncs and commits everywhere.
    let put = [("grpc_method", "Put"), ("grpc_type", "unary"), ("grpc_service", "etcdserverpb.KV")];
    let handled_ok = [put.as_slice(), &[("grpc_code", "OK")]].concat();
    let before = [
        now(m, "grpc_server_started_total", &put),
        now(m, "grpc_server_handled_total", &handled_ok),
        now(m, "grpc_server_msg_received_total", &put),
        now(m, "grpc_server_msg_sent_total", &put),
        now(m, "grpc_server_handling_seconds_count", &put),
        now(m, "etcd_network_client_grpc_received_bytes_total", &[]),
        now(m, "etcd_network_client_grpc_sent_bytes_total", &[]),
    ];
    let fsyncs: Vec<f64> =
        cluster.members.iter().map(|s| now(s, "etcd_disk_wal_fsync_duration_seconds_count", &[])).collect();
    let commits: Vec<f64> = cluster
        .members
        .iter()
        .map(|s| now(s, "etcd_disk_backend_commit_duration_seconds_count", &[]))
        .collect();
    runtime.block_on(async {
        let mut kv = KvClient::new(m.channel().await);
        kv.put(PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() }).await.unwrap();
    });
    // The call counts as handled when the server has sent its status, just after the
    // client has its answer.
    moves(m, "grpc_server_handled_total", &handled_ok, before[1]);
    let page = scrape(m);
    let after = [
        value(&page, "grpc_server_started_total", &put),
        value(&page, "grpc_server_handled_total", &handled_ok),
        value(&page, "grpc_server_msg_received_total", &put),
        value(&page, "grpc_server_msg_sent_total", &put),
        value(&page, "grpc_server_handling_seconds_count", &put),
    ];
    for (i, after) in after.iter().enumerate() {
        assert_eq!(*after, Some(before[i] + 1.0), "series {i} of the put: {page}");
    }
    assert!(value(&page, "etcd_network_client_grpc_received_bytes_total", &[]).unwrap() > before[5]);
    assert!(value(&page, "etcd_network_client_grpc_sent_bytes_total", &[]).unwrap() > before[6]);
    for (i, member) in cluster.members.iter().enumerate() {
        moves(member, "etcd_disk_wal_fsync_duration_seconds_count", &[], fsyncs[i]);
        moves(member, "etcd_disk_backend_commit_duration_seconds_count", &[], commits[i]);
    }

    // A read of a future revision fails with grpc-go's spelling of its code.
    let failed = [("grpc_method", "Range"), ("grpc_code", "OutOfRange")];
    let before = now(m, "grpc_server_handled_total", &failed);
    runtime.block_on(async {
        let mut kv = KvClient::new(m.channel().await);
        kv.range(RangeRequest { key: b"k".to_vec(), revision: 1_000_000, ..Default::default() })
            .await
            .unwrap_err();
    });
    assert_eq!(moves(m, "grpc_server_handled_total", &failed, before), before + 1.0);

    // A watch stream and a keep-alive stream count once each as bidi streams, their
    // messages one by one, and a client leaving is Canceled.
    let watch = [("grpc_method", "Watch"), ("grpc_type", "bidi_stream")];
    let keep_alive = [("grpc_method", "LeaseKeepAlive"), ("grpc_type", "bidi_stream")];
    let before = [
        now(m, "grpc_server_started_total", &watch),
        now(m, "grpc_server_started_total", &keep_alive),
        now(m, "grpc_server_msg_received_total", &keep_alive),
        now(m, "grpc_server_handled_total", &[&watch[..], &[("grpc_code", "Canceled")]].concat()),
    ];
    // The watch's client has a runtime of its own: dropping it closes the connection, as a
    // client process that exits does.
    let client_runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    client_runtime.block_on(async {
        let mut watches = WatchClient::new(m.channel().await);
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(WatchCreateRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })),
        };
        let mut stream = watches
            .watch(futures::stream::iter([create]).chain(futures::stream::pending()))
            .await
            .unwrap()
            .into_inner();
        stream.next().await.expect("created").unwrap();
        assert_eq!(now(m, "grpc_server_started_total", &watch), before[0] + 1.0);
        drop(stream);
    });
    drop(client_runtime);
    runtime.block_on(async {
        let mut leases = LeaseClient::new(m.channel().await);
        let id = leases.lease_grant(LeaseGrantRequest { ttl: 30, id: 0 }).await.unwrap().into_inner().id;
        let renewals = futures::stream::iter((0..3).map(move |_| LeaseKeepAliveRequest { id }));
        let mut answers =
            leases.lease_keep_alive(renewals.chain(futures::stream::pending())).await.unwrap().into_inner();
        for _ in 0..3 {
            answers.next().await.expect("a renewal").unwrap();
        }
        assert_eq!(now(m, "grpc_server_started_total", &keep_alive), before[1] + 1.0);
        assert_eq!(now(m, "grpc_server_msg_received_total", &keep_alive), before[2] + 3.0);
    });
    moves(m, "grpc_server_handled_total", &[&watch[..], &[("grpc_code", "Canceled")]].concat(), before[3]);

    // Peer traffic and probes, by member id as etcd labels them.
    let ids: Vec<String> = (0..3).map(|i| format!("{:x}", cluster.member_id(i))).collect();
    let l = &cluster.members[leader];
    let to = ids[follower].as_str();
    moves(l, "etcd_network_peer_sent_bytes_total", &[("To", to)], 0.0);
    moves(l, "etcd_network_peer_received_bytes_total", &[("From", to)], 0.0);
    moves(m, "etcd_network_peer_received_bytes_total", &[("From", ids[leader].as_str())], 0.0);
    moves(l, "etcd_network_peer_round_trip_time_seconds_count", &[("To", to)], 0.0);

    // The page's other mixin series, as the mixin reads them.
    let page = scrape(m);
    for gauge in ["process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds"] {
        assert!(value(&page, gauge, &[]).unwrap_or(0.0) > 0.0, "{gauge}: {page}");
    }
    assert!(value(&page, "process_cpu_seconds_total", &[]).is_some());
    assert_eq!(value(&page, "etcd_server_has_leader", &[]), Some(1.0));
    assert_eq!(value(&page, "etcd_server_is_leader", &[]), Some(0.0));
    assert_eq!(value(&page, "etcd_server_quota_backend_bytes", &[]), Some(2_147_483_648.0));
    assert!(value(&page, "etcd_mvcc_db_total_size_in_bytes", &[]).unwrap() > 0.0);
    assert!(value(&page, "etcd_mvcc_db_total_size_in_use_in_bytes", &[]).unwrap() > 0.0);
    assert!(value(&page, "etcd_server_proposals_committed_total", &[]).unwrap() > 0.0);
    assert!(value(&page, "etcd_server_proposals_applied_total", &[]).unwrap() > 0.0);
    assert_eq!(value(&page, "etcd_server_proposals_pending", &[]), Some(0.0));
    assert!(value(&page, "etcd_server_proposals_failed_total", &[]).is_some());
    check_with_promtool(&page, m, dir.path());

    // A leader kill: the survivors see a leader change, and fail to send to the dead one.
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let changes: Vec<f64> = survivors
        .iter()
        .map(|i| now(&cluster.members[*i], "etcd_server_leader_changes_seen_total", &[]))
        .collect();
    let dead = ids[leader].clone();
    cluster.members[leader].kill();
    for (i, survivor) in survivors.iter().enumerate() {
        let survivor = &cluster.members[*survivor];
        moves(survivor, "etcd_server_leader_changes_seen_total", &[], changes[i]);
        moves(survivor, "etcd_network_peer_sent_failures_total", &[("To", dead.as_str())], 0.0);
    }

    // A lost quorum: the new leader's last follower dies. A put on the leader is pending
    // (it cannot commit), then fails; and the leader, hearing from no quorum, has none.
    let new_leader = cluster.leader();
    let other = survivors.iter().copied().find(|i| *i != new_leader).expect("two survivors");
    cluster.members[other].kill();
    let last = &cluster.members[new_leader];
    let failed_before = now(last, "etcd_server_proposals_failed_total", &[]);
    let endpoint = last.endpoint();
    let put = std::thread::spawn(move || {
        runtime.block_on(async {
            let mut kv = KvClient::connect(endpoint).await.unwrap();
            kv.put(PutRequest { key: b"lost".to_vec(), ..Default::default() }).await
        })
    });
    wait_for("a pending proposal", START_DEADLINE, || {
        (now(last, "etcd_server_proposals_pending", &[]) >= 1.0).then_some(())
    });
    assert!(put.join().unwrap().is_err(), "a put without a quorum succeeded");
    assert_eq!(now(last, "etcd_server_proposals_failed_total", &[]), failed_before + 1.0);
    assert_eq!(now(last, "etcd_server_proposals_pending", &[]), 0.0);
    wait_for("the leader without a quorum to report no leader", START_DEADLINE, || {
        (now(last, "etcd_server_has_leader", &[]) == 0.0).then_some(())
    });
}

/// promtool parses the page, and lints nothing that etcd's own page does not also show
/// (etcd names two gauges `*_total`, and synod keeps etcd's names).
fn check_with_promtool(page: &str, member: &Server, dir: &std::path::Path) {
    let Some(promtool) = interop_program("promtool") else { return };
    let lint = |page: &str| -> BTreeSet<String> {
        let file = dir.join("scraped.prom");
        std::fs::write(&file, page).unwrap();
        let output = std::process::Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(std::fs::File::open(&file).unwrap())
            .output()
            .expect("run promtool");
        let said =
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        // 0: clean, 3: lint findings only; anything else is a page promtool cannot read.
        assert!(matches!(output.status.code(), Some(0 | 3)), "promtool check metrics: {said}\n{page}");
        said.lines().map(str::to_string).filter(|l| !l.trim().is_empty()).collect()
    };
    let findings = lint(page);
    let etcds = [
        "etcd_server_proposals_applied_total non-counter metrics should not have \"_total\" suffix",
        "etcd_server_proposals_committed_total non-counter metrics should not have \"_total\" suffix",
    ];
    let unexpected: Vec<&String> = findings.iter().filter(|f| !etcds.contains(&f.as_str())).collect();
    assert!(unexpected.is_empty(), "promtool on {}: {unexpected:?}", member.name);
    if let Some(mut etcd) = Server::etcd(dir) {
        let (_, etcd_page) = http(&etcd.address(), "GET", "/metrics", "", "");
        let etcd_findings = lint(&etcd_page);
        for finding in &findings {
            assert!(etcd_findings.contains(finding), "etcd's page does not have {finding:?}");
        }
        etcd.kill();
    }
}

/// synod's own series: adds and the entries that carried them (the combining factor),
/// counter sessions, and callers waiting in a lock queue; a caller that gives up waiting
/// counts as a Canceled call.
#[test]
fn synods_own_series_move() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::synod(dir.path());
    let runtime = runtime();
    runtime.block_on(async {
        let client = synod_client::Client::connect([server.endpoint()]).expect("client");
        let session = std::sync::Arc::new(client.session().await.expect("session"));
        let adds: Vec<_> = (0..20)
            .map(|_| {
                let session = session.clone();
                tokio::spawn(async move { session.add("hits", 1).await.expect("add") })
            })
            .collect();
        for add in adds {
            add.await.unwrap();
        }
        let page = scrape(&server);
        assert_eq!(value(&page, "synod_native_adds_total", &[]), Some(20.0), "{page}");
        let entries = value(&page, "synod_native_add_entries_total", &[]).unwrap();
        assert!((1.0..=20.0).contains(&entries), "{entries}");
        assert_eq!(value(&page, "synod_native_add_sessions", &[]), Some(1.0));

        let mut leases = LeaseClient::new(server.channel().await);
        let first = leases.lease_grant(LeaseGrantRequest { ttl: 30, id: 0 }).await.unwrap().into_inner().id;
        let second = leases.lease_grant(LeaseGrantRequest { ttl: 30, id: 0 }).await.unwrap().into_inner().id;
        let mut locks = LockClient::new(server.channel().await);
        locks.lock(LockRequest { name: b"door".to_vec(), lease: first }).await.unwrap();
        let mut waiter = LockClient::new(server.channel().await);
        let waiting =
            tokio::spawn(
                async move { waiter.lock(LockRequest { name: b"door".to_vec(), lease: second }).await },
            );
        let waiters = [("queue", "lock")];
        let deadline = tokio::time::Instant::now() + START_DEADLINE;
        while now(&server, "synod_lock_waiters", &waiters) < 1.0 {
            assert!(tokio::time::Instant::now() < deadline, "no waiter counted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let canceled = [("grpc_method", "Lock"), ("grpc_code", "Canceled")];
        let canceled_before = now(&server, "grpc_server_handled_total", &canceled);
        waiting.abort();
        while now(&server, "synod_lock_waiters", &waiters) > 0.0 {
            assert!(tokio::time::Instant::now() < deadline, "the waiter that left is still counted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The call it left before any reply counts as handled, Canceled, as grpc-go's does.
        while now(&server, "grpc_server_handled_total", &canceled) <= canceled_before {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the abandoned Lock call is not counted as handled"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}
