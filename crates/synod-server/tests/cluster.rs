//! Replication with real `synod` processes on loopback: failover after `kill -9` of the
//! leader, members catching up after a restart (from the log and from a snapshot),
//! membership changes under load, replicas that stay identical, a minority that fails fast
//! and never serves stale reads, a leader that hands over before it stops, and etcdctl's
//! cluster commands.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::{
    Cluster, Server, etcdctl, etcdctl_output, interop_program, kv, maintenance, metric, status, wait_for,
};
use synod_api::etcdserverpb::cluster_client::ClusterClient;
use synod_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use synod_api::etcdserverpb::request_op::Request as Op;
use synod_api::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, HashKvRequest, MemberAddRequest, MemberListRequest,
    MemberPromoteRequest, MemberRemoveRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

/// How long a cluster gets to reach a state the test waits for.
const DEADLINE: Duration = Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

#[derive(Clone, Debug)]
struct Ack {
    key: Vec<u8>,
    value: Vec<u8>,
    revision: i64,
}

/// The failures of a load: the member written through, and its answer.
type Failures = Vec<(String, tonic::Status)>;

/// Writers that put unique keys through given members until stopped, recording every
/// acknowledged write and every error.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(Vec<Ack>, Failures)>>,
}

impl Load {
    fn start(runtime: &tokio::runtime::Runtime, through: &[&Server], tag: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = through
            .iter()
            .enumerate()
            .map(|(writer, server)| {
                let (endpoint, name, stop, tag) =
                    (server.endpoint(), server.name.clone(), stop.clone(), tag.to_string());
                runtime.spawn(async move {
                    let mut client = synod_api::etcdserverpb::kv_client::KvClient::connect(endpoint)
                        .await
                        .expect("connect writer");
                    let (mut acks, mut errors) = (Vec::new(), Vec::new());
                    let mut i = 0;
                    while !stop.load(Ordering::Acquire) {
                        let key = format!("{tag}/w{writer}/{i:06}").into_bytes();
                        let value = format!("via-{name}-{i}").into_bytes();
                        i += 1;
                        let put = PutRequest { key: key.clone(), value: value.clone(), ..Default::default() };
                        match client.put(put).await {
                            Ok(response) => {
                                let revision = response.into_inner().header.expect("header").revision;
                                acks.push(Ack { key, value, revision });
                            }
                            Err(status) => {
                                errors.push((name.clone(), status));
                                // A member that is down refuses at once; do not spin on it.
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                    (acks, errors)
                })
            })
            .collect();
        Load { stop, tasks }
    }

    fn stop(self, runtime: &tokio::runtime::Runtime) -> (Vec<Ack>, Failures) {
        self.stop.store(true, Ordering::Release);
        let (mut acks, mut errors) = (Vec::new(), Vec::new());
        for task in self.tasks {
            let (a, e) = runtime.block_on(task).expect("writer task");
            acks.extend(a);
            errors.extend(e);
        }
        (acks, errors)
    }
}

/// Every acknowledged write is in the store (read linearizably through `server`) with its
/// value and the revision it was acknowledged with, and no two acknowledgements share a
/// revision.
fn check_acks(runtime: &tokio::runtime::Runtime, server: &Server, prefix: &str, acked: &[Ack]) {
    runtime.block_on(async {
        let mut client = kv(server).await;
        let end = format!("{prefix}0").into_bytes(); // '/' + 1
        let all =
            RangeRequest { key: format!("{prefix}/").into_bytes(), range_end: end, ..Default::default() };
        let stored = client.range(all).await.expect("range the acknowledged keys").into_inner();
        let by_key: HashMap<&[u8], (&[u8], i64)> =
            stored.kvs.iter().map(|kv| (kv.key.as_slice(), (kv.value.as_slice(), kv.mod_revision))).collect();
        for ack in acked {
            assert_eq!(
                by_key.get(ack.key.as_slice()),
                Some(&(ack.value.as_slice(), ack.revision)),
                "acknowledged write {} is lost or changed",
                String::from_utf8_lossy(&ack.key)
            );
        }
        let mut revisions: Vec<i64> = acked.iter().map(|a| a.revision).collect();
        revisions.sort_unstable();
        revisions.dedup();
        assert_eq!(revisions.len(), acked.len(), "two acknowledged writes share a revision");
    });
}

/// Waits until every running member has applied `revision` and they all hash the key
/// space at it to the same value; returns the hash.
fn wait_same_hash(runtime: &tokio::runtime::Runtime, cluster: &Cluster, revision: i64) -> u32 {
    wait_for(&format!("every member to hash revision {revision} alike"), DEADLINE, || {
        runtime.block_on(async {
            let mut hashes = Vec::new();
            for member in cluster.members.iter().filter(|m| m.is_running()) {
                let mut client = maintenance(member).await;
                let response = client.hash_kv(HashKvRequest { revision }).await.ok()?.into_inner();
                hashes.push(response.hash);
            }
            let first = *hashes.first()?;
            hashes.iter().all(|h| *h == first).then_some(first)
        })
    })
}

async fn current_revision(server: &Server) -> i64 {
    let mut client = kv(server).await;
    let response =
        client.range(RangeRequest { key: b"any".to_vec(), ..Default::default() }).await.expect("range");
    response.into_inner().header.expect("header").revision
}

/// The leader is killed with SIGKILL under a write load through every member: a survivor
/// accepts writes again, every acknowledged write survives, writes through survivors fail
/// only with etcd's Unavailable errors, and the killed member, restarted, catches up to
/// the same state. How fast writes resume is printed, not asserted: speed is a benchmark's
/// to show (a split vote legitimately takes another election round, and this test shares
/// two cores with the others of its binary).
#[test]
fn leader_kill_9_fails_over_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(dir.path(), 3, &[]);
    let runtime = runtime();
    let leader = cluster.leader();
    let survivor = (leader + 1) % 3;
    let load = Load::start(&runtime, &cluster.members.iter().collect::<Vec<_>>(), "load");
    // Let the load run until writes are being acknowledged through the doomed leader.
    wait_for("writes to land", DEADLINE, || {
        let revision = runtime.block_on(current_revision(&cluster.members[leader]));
        (revision > 50).then_some(())
    });

    let killed_at = Instant::now();
    cluster.members[leader].kill();
    let failover = runtime.block_on(async {
        let mut client = kv(&cluster.members[survivor]).await;
        loop {
            let put =
                PutRequest { key: b"after-failover".to_vec(), value: b"x".to_vec(), ..Default::default() };
            match client.put(put).await {
                Ok(_) => return killed_at.elapsed(),
                Err(status) => {
                    assert_eq!(
                        status.code(),
                        tonic::Code::Unavailable,
                        "a write during failover: {status:?}"
                    );
                    assert!(killed_at.elapsed() < DEADLINE, "no write succeeded after the leader died");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    });
    eprintln!("writes resumed {failover:?} after kill -9 of the leader");
    // The load goes on through the survivors before it stops.
    let resumed_at = runtime.block_on(current_revision(&cluster.members[survivor]));
    wait_for("the load to go on through the survivors", DEADLINE, || {
        let revision = runtime.block_on(current_revision(&cluster.members[survivor]));
        (revision > resumed_at + 20).then_some(())
    });

    let (acked, errors) = load.stop(&runtime);
    let killed_name = cluster.members[leader].name.clone();
    for (through, status) in &errors {
        if *through != killed_name {
            assert_eq!(
                status.code(),
                tonic::Code::Unavailable,
                "a write through {through} failed with {status:?}"
            );
        }
    }
    assert!(acked.len() > 50, "only {} writes were acknowledged", acked.len());
    check_acks(&runtime, &cluster.members[survivor], "load", &acked);

    cluster.members[leader].start();
    let revision = runtime.block_on(current_revision(&cluster.members[survivor]));
    wait_same_hash(&runtime, &cluster, revision);
    check_acks(&runtime, &cluster.members[leader], "load", &acked);
}

/// Many writes at once through a follower (several forwarded batches in flight on its
/// stream to the leader, answered as they finish): every one is acknowledged with a
/// revision of its own, and the follower serves each right after.
#[test]
fn concurrent_writes_through_a_follower_are_each_answered() {
    const WRITERS: usize = 16;
    const PUTS: usize = 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), 3, &[]);
    let runtime = runtime();
    let follower = (cluster.leader() + 1) % 3;
    let revisions: Vec<i64> = runtime.block_on(async {
        let writers = (0..WRITERS).map(|w| {
            let server = &cluster.members[follower];
            async move {
                let mut client = kv(server).await;
                let mut revisions = Vec::with_capacity(PUTS);
                for i in 0..PUTS {
                    let key = format!("w{w}-{i}").into_bytes();
                    let put = PutRequest { key: key.clone(), value: b"x".to_vec(), ..Default::default() };
                    let header = client.put(put).await.expect("a put through a follower").into_inner().header;
                    let revision = header.expect("header").revision;
                    let range = RangeRequest { key, serializable: true, ..Default::default() };
                    let read = client.range(range).await.expect("range").into_inner();
                    assert_eq!(read.kvs.len(), 1, "the follower serves its own write at once");
                    assert!(read.kvs[0].mod_revision == revision);
                    revisions.push(revision);
                }
                revisions
            }
        });
        futures::future::join_all(writers).await.into_iter().flatten().collect()
    });
    let mut distinct = revisions.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), WRITERS * PUTS, "every put has a revision of its own");
}

/// A leader whose process dies is replaced at once, not an election timeout later: its
/// followers see their replication streams break, find its peer port refusing connections,
/// agree on it, and the most caught-up campaigns. With a 5 s election timeout the ordinary
/// path cannot elect anyone within 4 s of the leader's last heartbeat; this one must.
#[test]
fn a_killed_leader_is_replaced_before_the_election_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(dir.path(), 3, &["--election-timeout", "5000"]);
    let runtime = runtime();
    let leader = cluster.leader();
    let old = cluster.member_id(leader);
    runtime.block_on(async {
        let mut client = kv(&cluster.members[leader]).await;
        for i in 0..10 {
            let put = PutRequest {
                key: format!("before-{i}").into_bytes(),
                value: b"x".to_vec(),
                ..Default::default()
            };
            client.put(put).await.expect("put");
        }
    });
    cluster.members[leader].kill();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let new = wait_for("a new leader well before the election timeout", Duration::from_secs(3), || {
        let status = runtime.block_on(status(&cluster.members[survivors[0]])).ok()?;
        (status.leader != 0 && status.leader != old).then_some(status.leader)
    });
    runtime.block_on(async {
        let mut client = kv(&cluster.members[survivors[1]]).await;
        let put = PutRequest { key: b"after".to_vec(), value: b"x".to_vec(), ..Default::default() };
        client.put(put).await.expect("a write after the failover");
    });
    let campaigned = survivors
        .iter()
        .filter(|i| {
            cluster.members[**i].log().contains("campaigning without waiting for the election timeout")
        })
        .count();
    let lines: Vec<String> = survivors
        .iter()
        .flat_map(|i| cluster.members[*i].log().lines().map(str::to_string).collect::<Vec<_>>())
        .filter(|line| line.contains("failover") || line.contains("elect") || line.contains("vote"))
        .collect();
    assert_eq!(campaigned, 1, "one survivor campaigns at once (new leader {new:x}):\n{}", lines.join("\n"));
}

/// A leader that is only silent (stopped with SIGSTOP: its connections stay open, its port
/// accepts) is not taken for gone: it is replaced by the ordinary election, no sooner than
/// its followers' election timeout allows (0.8 of the 3 s timeout after its last heartbeat).
#[test]
fn a_silent_leader_is_replaced_only_by_the_election_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), 3, &["--election-timeout", "3000"]);
    let runtime = runtime();
    let leader = cluster.leader();
    let old = cluster.member_id(leader);
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    signal(&cluster.members[leader], "-STOP");
    let stopped_at = Instant::now();
    let new = wait_for("a new leader", DEADLINE, || {
        let status = runtime.block_on(status(&cluster.members[survivors[0]])).ok()?;
        (status.leader != 0 && status.leader != old).then_some(status.leader)
    });
    let took = stopped_at.elapsed();
    signal(&cluster.members[leader], "-CONT");
    assert!(
        took >= Duration::from_millis(1500),
        "leader {new:x} replaced {took:?} after the old one went silent"
    );
    for i in &survivors {
        let log = cluster.members[*i].log();
        assert!(!log.contains("campaigning without waiting"), "member {i} took a silent leader for gone");
    }
}

/// A leader stopped with SIGTERM hands its leadership to a follower first, as etcd does:
/// when it has exited, no survivor still follows it (without the handover they would for
/// an election timeout), and it says so in its log.
#[test]
fn a_leader_stopped_with_sigterm_hands_over_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(dir.path(), 3, &[]);
    let runtime = runtime();
    let leader = cluster.leader();
    let old = cluster.member_id(leader);
    assert_eq!(cluster.members[leader].terminate(), Some(0));
    for (i, member) in cluster.members.iter().enumerate().filter(|(i, _)| *i != leader) {
        let status = runtime.block_on(status(member)).expect("status");
        assert_ne!(status.leader, old, "member {i} still follows the stopped leader");
    }
    assert!(
        cluster.members[leader].log().contains("handed the leadership over before stopping"),
        "{}",
        cluster.members[leader].log()
    );
}

/// A follower that misses writes while it is down catches up from the leader's log when the
/// log still holds them, and from a snapshot when the log was purged past it. The state file
/// is the snapshot: no member keeps a copy of its state, though several were built, and the
/// follower lets go of the one it received once it is in.
#[test]
fn restarted_member_catches_up_by_log_and_by_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flags = ["--snapshot-count", "100", "--experimental-snapshot-catchup-entries", "10"];
    let mut cluster = Cluster::start(dir.path(), 3, &flags);
    let runtime = runtime();
    let leader = cluster.leader();
    let follower = (leader + 1) % 3;
    let put_many = |cluster: &Cluster, from: usize, to: usize| {
        runtime.block_on(async {
            let mut client = kv(&cluster.members[leader]).await;
            for i in from..to {
                let put = PutRequest {
                    key: format!("k{i:04}").into_bytes(),
                    value: format!("v{i}").into_bytes(),
                    ..Default::default()
                };
                client.put(put).await.expect("put");
            }
        })
    };

    // By log: a few writes, far from the first snapshot.
    cluster.members[follower].kill();
    put_many(&cluster, 0, 20);
    assert_eq!(metric(&cluster.members[leader], "synod_log_first_index"), 0, "the log was purged already");
    cluster.members[follower].start();
    let revision = runtime.block_on(current_revision(&cluster.members[leader]));
    wait_same_hash(&runtime, &cluster, revision);
    assert_eq!(metric(&cluster.members[follower], "synod_snapshots_installed"), 0, "caught up by snapshot");

    // By snapshot: enough writes that the log the follower needs is purged.
    let applied = runtime.block_on(status(&cluster.members[follower])).expect("status").raft_applied_index;
    cluster.members[follower].kill();
    put_many(&cluster, 20, 400);
    wait_for("the leader to purge the log the follower needs", DEADLINE, || {
        let first = metric(&cluster.members[leader], "synod_log_first_index");
        (first > applied as i64 + 1).then_some(())
    });
    cluster.members[follower].start();
    let revision = runtime.block_on(current_revision(&cluster.members[leader]));
    wait_same_hash(&runtime, &cluster, revision);
    assert!(
        metric(&cluster.members[follower], "synod_snapshots_installed") >= 1,
        "caught up without a snapshot"
    );
    runtime.block_on(async {
        let mut client = kv(&cluster.members[follower]).await;
        let get = RangeRequest { key: b"k0399".to_vec(), serializable: true, ..Default::default() };
        let kvs = client.range(get).await.expect("range").into_inner().kvs;
        assert_eq!(
            kvs.first().map(|kv| kv.value.clone()),
            Some(b"v399".to_vec()),
            "the follower misses k0399"
        );
    });
    for member in &cluster.members {
        let snap = member.data_dir.join("member").join("snap");
        let files: Vec<_> = std::fs::read_dir(&snap)
            .expect("the snapshot directory")
            .map(|entry| entry.expect("an entry").file_name())
            .collect();
        assert!(files.is_empty(), "{} keeps snapshot files: {files:?}", member.name);
        // A transfer the leader retried may still be ending; its state goes with it.
        wait_for(&format!("{} to keep no received state", member.name), DEADLINE, || {
            files_under(&member.data_dir)
                .iter()
                .all(|p| !p.to_string_lossy().contains(".incoming-"))
                .then_some(())
        });
    }
}

/// Every file under `dir`, at any depth.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("a directory") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

/// Under a steady write load: a learner is added, started with `--initial-cluster-state
/// existing`, refused linearizable reads while a learner, promoted once it has caught up,
/// and a voter is removed (and stops, as etcd's removed members do). No write fails, none
/// is lost, and the remaining members hold the same data.
#[test]
fn members_are_added_promoted_and_removed_under_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(dir.path(), 3, &[]);
    let runtime = runtime();
    let leader = cluster.leader();
    let (other, removed) = ((leader + 1) % 3, (leader + 2) % 3);
    let load = Load::start(&runtime, &[&cluster.members[leader]], "load");

    // Add a learner, through a follower: the change goes to the leader.
    let ports = (support::free_port(), support::free_port());
    let peer_url = format!("http://127.0.0.1:{}", ports.1);
    let added = runtime.block_on(async {
        let mut client = ClusterClient::connect(cluster.members[other].endpoint()).await.expect("connect");
        let add = MemberAddRequest { peer_ur_ls: vec![peer_url.clone()], is_learner: true };
        let response = client.member_add(add).await.expect("member add").into_inner();
        let member = response.member.expect("the added member");
        assert!(member.is_learner && member.name.is_empty(), "added: {member:?}");
        assert!(response.members.iter().any(|m| m.id == member.id), "the answer lists the new member");
        let again = MemberAddRequest { peer_ur_ls: vec!["http://127.0.0.1:1".into()], is_learner: true };
        let refused = client.member_add(again).await.expect_err("a second learner");
        assert_eq!(refused.message(), "etcdserver: too many learner members in cluster");
        member.id
    });
    let initial_cluster = cluster.initial_cluster_with(&format!("m3={peer_url}"));
    let mut learner = Server::member(&cluster.dir, "m3", ports, &initial_cluster, "existing", &[]);
    learner.spawn();
    learner.wait_serving(true);
    wait_for("m3 to know it is a learner", DEADLINE, || {
        runtime.block_on(status(&learner)).ok().filter(|s| s.is_learner).map(drop)
    });
    runtime.block_on(async {
        let mut client = kv(&learner).await;
        let refused = client.range(RangeRequest { key: b"k".to_vec(), ..Default::default() }).await;
        assert_eq!(
            refused.expect_err("a linearizable read on a learner").message(),
            "etcdserver: rpc not supported for learner"
        );
    });

    // Promote it once it has caught up; until then etcd's "not in sync" is the only refusal.
    wait_for("the learner to be promoted", DEADLINE, || {
        runtime.block_on(async {
            let mut client =
                ClusterClient::connect(cluster.members[leader].endpoint()).await.expect("connect");
            match client.member_promote(MemberPromoteRequest { id: added }).await {
                Ok(_) => Some(()),
                Err(status) => {
                    let expected =
                        "etcdserver: can only promote a learner member which is in sync with leader";
                    assert_eq!(status.message(), expected, "promote failed");
                    None
                }
            }
        })
    });
    learner.wait_serving(false);
    cluster.members.push(learner);

    // Remove a voter that is not the leader; it learns it was removed and stops.
    let removed_id = cluster.member_id(removed);
    runtime.block_on(async {
        let mut client = ClusterClient::connect(cluster.members[leader].endpoint()).await.expect("connect");
        let response = client.member_remove(MemberRemoveRequest { id: removed_id }).await.expect("remove");
        let ids: Vec<u64> = response.into_inner().members.iter().map(|m| m.id).collect();
        assert!(
            !ids.contains(&removed_id) && ids.contains(&added) && ids.len() == 3,
            "members after remove: {ids:x?}"
        );
    });
    let exit = cluster.members[removed].wait_exit(DEADLINE);
    assert_ne!(exit, Some(0), "the removed member exited cleanly");
    let log = cluster.members[removed].log();
    assert!(
        log.contains("the member has been permanently removed from the cluster"),
        "removed member log:\n{log}"
    );

    let (acked, errors) = load.stop(&runtime);
    assert!(errors.is_empty(), "writes failed during membership changes: {errors:?}");
    assert!(!acked.is_empty());
    check_acks(&runtime, &cluster.members[leader], "load", &acked);
    let revision = runtime.block_on(current_revision(&cluster.members[leader]));
    wait_same_hash(&runtime, &cluster, revision);
    runtime.block_on(async {
        let mut client = ClusterClient::connect(cluster.members[3].endpoint()).await.expect("connect");
        let list =
            client.member_list(MemberListRequest { linearizable: true }).await.expect("list").into_inner();
        let m3 = list.members.iter().find(|m| m.id == added).expect("m3 is listed");
        assert_eq!((m3.name.as_str(), m3.is_learner), ("m3", false), "m3: {m3:?}");
    });
}

/// Puts, deletes, transactions and a compaction, sent through random members, leave every
/// member with the same key space: the same HashKV at the same revision and the same keys.
#[test]
fn members_hash_alike_after_a_mixed_workload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), 3, &[]);
    let runtime = runtime();
    let seed: u64 = std::env::var("SYNOD_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_0003);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut compacted = 0;
    runtime.block_on(async {
        let mut clients = Vec::new();
        for member in &cluster.members {
            clients.push(kv(member).await);
        }
        for i in 0..300 {
            let client = &mut clients[rng.random_range(0..3)];
            let key = format!("k{:02}", rng.random_range(0..40)).into_bytes();
            match rng.random_range(0..10) {
                0..=5 => {
                    let put = PutRequest { key, value: format!("v{i}").into_bytes(), ..Default::default() };
                    client.put(put).await.expect("put");
                }
                6 => {
                    let end = format!("k{:02}", rng.random_range(0..40)).into_bytes();
                    client
                        .delete_range(DeleteRangeRequest { key, range_end: end, ..Default::default() })
                        .await
                        .expect("delete");
                }
                7 | 8 => {
                    let compare = Compare {
                        result: CompareResult::Greater as i32,
                        target: CompareTarget::Version as i32,
                        key: key.clone(),
                        target_union: Some(TargetUnion::Version(1)),
                        ..Default::default()
                    };
                    let put = Op::RequestPut(PutRequest {
                        key: key.clone(),
                        value: format!("t{i}").into_bytes(),
                        ..Default::default()
                    });
                    let delete = Op::RequestDeleteRange(DeleteRangeRequest { key, ..Default::default() });
                    let txn = TxnRequest {
                        compare: vec![compare],
                        success: vec![RequestOp { request: Some(delete) }],
                        failure: vec![RequestOp { request: Some(put) }],
                    };
                    client.txn(txn).await.expect("txn");
                }
                _ if i > 150 => {
                    let revision = current_revision(&cluster.members[0]).await / 2;
                    if revision > compacted {
                        client
                            .compact(CompactionRequest { revision, physical: true })
                            .await
                            .expect("compact");
                        compacted = revision;
                    }
                }
                _ => {}
            }
        }
    });
    let revision = runtime.block_on(current_revision(&cluster.members[0]));
    wait_same_hash(&runtime, &cluster, revision);
    let dumps: Vec<Vec<synod_api::mvccpb::KeyValue>> = runtime.block_on(async {
        let mut dumps = Vec::new();
        for member in &cluster.members {
            let mut client = kv(member).await;
            let all = RangeRequest {
                key: vec![0],
                range_end: vec![0],
                revision,
                serializable: true,
                ..Default::default()
            };
            let kvs = client.range(all).await.expect("range").into_inner().kvs;
            dumps.push(kvs);
        }
        dumps
    });
    assert!(!dumps[0].is_empty());
    assert_eq!(dumps[0], dumps[1], "members m0 and m1 differ (seed {seed})");
    assert_eq!(dumps[0], dumps[2], "members m0 and m2 differ (seed {seed})");
}

/// An old leader frozen with SIGSTOP while the others elect a new one and move on never
/// answers a linearizable read with the old value after it resumes. With only one member
/// of three left, writes and linearizable reads fail fast with Unavailable, serializable
/// reads still answer, and `hasleader` requests are refused at once.
#[test]
fn a_minority_fails_fast_and_never_serves_stale_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(dir.path(), 3, &[]);
    let runtime = runtime();
    let old = cluster.leader();
    let put = |server: &Server, value: &str| {
        let put = PutRequest { key: b"k".to_vec(), value: value.as_bytes().to_vec(), ..Default::default() };
        runtime.block_on(async { kv(server).await.put(put).await })
    };
    put(&cluster.members[old], "old").expect("put the old value");

    signal(&cluster.members[old], "-STOP");
    let other = (old + 1) % 3;
    wait_for("the others to elect a leader and take a write", DEADLINE, || {
        put(&cluster.members[other], "new").ok()
    });
    signal(&cluster.members[old], "-CONT");
    let mut answered = 0;
    wait_for("the old leader to answer a linearizable read", DEADLINE, || {
        let read = runtime.block_on(async {
            kv(&cluster.members[old])
                .await
                .range(RangeRequest { key: b"k".to_vec(), ..Default::default() })
                .await
        });
        match read {
            Ok(response) => {
                let value = response.into_inner().kvs.pop().map(|kv| kv.value);
                assert_eq!(value, Some(b"new".to_vec()), "a linearizable read returned a stale value");
                answered += 1;
                (answered == 5).then_some(())
            }
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "read on the old leader: {status:?}");
                None
            }
        }
    });

    // Leave one member of three.
    let lone = other;
    for (i, member) in cluster.members.iter_mut().enumerate() {
        if i != lone {
            member.kill();
        }
    }
    let lone = &cluster.members[lone];
    let etcd_unavailable =
        ["etcdserver: no leader", "etcdserver: leader changed", "etcdserver: request timed out"];
    for _ in 0..3 {
        let started = Instant::now();
        let status = put(lone, "minority").expect_err("a write on a minority");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(etcd_unavailable.contains(&status.message()), "{status:?}");
        assert!(started.elapsed() < Duration::from_secs(8), "the write took {:?} to fail", started.elapsed());
    }
    runtime.block_on(async {
        let mut client = kv(lone).await;
        let status = client
            .range(RangeRequest { key: b"k".to_vec(), ..Default::default() })
            .await
            .expect_err("a linearizable read on a minority");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        let serializable = RangeRequest { key: b"k".to_vec(), serializable: true, ..Default::default() };
        let kvs = client.range(serializable).await.expect("a serializable read").into_inner().kvs;
        assert_eq!(kvs.first().map(|kv| kv.value.clone()), Some(b"new".to_vec()));
    });
    wait_for("the lone member to know it has no leader", DEADLINE, || {
        runtime.block_on(status(lone)).ok().filter(|s| s.leader == 0).map(drop)
    });
    runtime.block_on(async {
        let mut client = kv(lone).await;
        let mut request = tonic::Request::new(RangeRequest {
            key: b"k".to_vec(),
            serializable: true,
            ..Default::default()
        });
        request.metadata_mut().insert("hasleader", "true".parse().expect("ascii"));
        let started = Instant::now();
        let status = client.range(request).await.expect_err("a hasleader request without a leader");
        assert_eq!((status.code(), status.message()), (tonic::Code::Unavailable, "etcdserver: no leader"));
        assert!(started.elapsed() < Duration::from_millis(500), "hasleader took {:?}", started.elapsed());
    });
}

fn signal(server: &Server, signal: &str) {
    let sent =
        std::process::Command::new("kill").args([signal, &server.pid().to_string()]).status().expect("kill");
    assert!(sent.success(), "kill {signal} failed");
}

/// etcdctl's cluster commands against synod: `endpoint status --cluster`, `member list`,
/// `endpoint health --cluster`, `endpoint hashkv --cluster`, `move-leader`, and `member add`
/// / `member remove` with a member started from the lines `member add` prints.
#[test]
fn etcdctl_cluster_commands_work() {
    let Some(program) = interop_program("etcdctl") else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(dir.path(), 3, &[]);
    let one = format!("--endpoints={}", cluster.members[0].address());
    let all = format!("--endpoints={}", cluster.addresses());

    let (stdout, stderr) = etcdctl_output(&program, &[&one, "endpoint", "status", "--cluster", "-w", "json"]);
    let statuses: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let statuses = statuses.as_array().expect("an array");
    assert_eq!(statuses.len(), 3, "{statuses:?}\n{stderr}");
    let leaders: Vec<u64> =
        statuses.iter().map(|s| s["Status"]["leader"].as_u64().expect("leader")).collect();
    assert!(leaders[0] != 0 && leaders.iter().all(|l| *l == leaders[0]), "leaders: {leaders:?}");
    let ids: Vec<u64> =
        statuses.iter().map(|s| s["Status"]["header"]["member_id"].as_u64().expect("id")).collect();
    assert_eq!(ids.iter().filter(|id| **id == leaders[0]).count(), 1, "the leader is one of the endpoints");

    let members: serde_json::Value =
        serde_json::from_str(&etcdctl(&program, &[&one, "member", "list", "-w", "json"])).expect("json");
    let mut names: Vec<&str> = members["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["name"].as_str().expect("name"))
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["m0", "m1", "m2"]);
    for member in members["members"].as_array().expect("members") {
        let name = member["name"].as_str().expect("name");
        let server = cluster.members.iter().find(|m| m.name == name).expect("a started member");
        assert_eq!(member["peerURLs"][0], server.peer_url());
        assert_eq!(member["clientURLs"][0], server.endpoint());
    }

    let (stdout, stderr) = etcdctl_output(&program, &[&one, "endpoint", "health", "--cluster"]);
    let health = stdout + &stderr;
    assert_eq!(health.matches("is healthy").count(), 3, "{health}");
    let hashes: serde_json::Value =
        serde_json::from_str(&etcdctl(&program, &[&one, "endpoint", "hashkv", "--cluster", "-w", "json"]))
            .expect("json");
    let hashes: Vec<u64> =
        hashes.as_array().expect("array").iter().map(|h| h["HashKV"]["hash"].as_u64().unwrap_or(0)).collect();
    assert!(hashes.len() == 3 && hashes.iter().all(|h| *h == hashes[0]), "{hashes:?}");

    let leader = cluster.leader();
    let target = (leader + 1) % 3;
    let target_id = format!("{:x}", cluster.member_id(target));
    let moved = etcdctl(&program, &[&all, "move-leader", &target_id]);
    assert!(moved.contains("Leadership transferred"), "{moved}");
    assert_eq!(cluster.leader(), target);

    let ports = (support::free_port(), support::free_port());
    let peer_url = format!("http://127.0.0.1:{}", ports.1);
    let added = etcdctl(&program, &[&all, "member", "add", "m3", &format!("--peer-urls={peer_url}")]);
    let id = added
        .split_whitespace()
        .nth(1)
        .filter(|_| added.starts_with("Member "))
        .unwrap_or_else(|| panic!("member add printed: {added}"))
        .to_string();
    let initial_cluster = added
        .lines()
        .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER=\""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("ETCD_INITIAL_CLUSTER line");
    assert!(added.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""), "{added}");
    let mut joined = Server::member(&cluster.dir, "m3", ports, initial_cluster, "existing", &[]);
    joined.start();
    // A member publishes its name and client URLs once it runs, as etcd's does: wait for it.
    let started = format!("{id}, started, m3, {peer_url}");
    wait_for("the added member to be listed as started", DEADLINE, || {
        etcdctl(&program, &[&all, "member", "list"]).contains(&started).then_some(())
    });
    // etcdctl pads ids to 16 characters in these lines: compare the words.
    let removed = etcdctl(&program, &[&all, "member", "remove", &id]);
    let words: Vec<&str> = removed.split_whitespace().collect();
    assert_eq!(words.get(..4), Some(&["Member", id.as_str(), "removed", "from"][..]), "{removed}");
    assert_ne!(joined.wait_exit(DEADLINE), Some(0), "the removed member exited cleanly");
    cluster.members.push(joined);
}

/// A member whose data dir belongs to another cluster than the members it is pointed at
/// refuses to start, and says which two clusters they are.
#[test]
fn a_data_dir_of_another_cluster_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = runtime();
    let ports = (support::free_port(), support::free_port());
    let alone = format!("x0=http://127.0.0.1:{}", ports.1);
    let mut stray = Server::member(dir.path(), "x0", ports, &alone, "new", &[]);
    stray.start();
    let stray_cluster = runtime.block_on(status(&stray)).expect("status").header.expect("header").cluster_id;
    assert_eq!(stray.terminate(), Some(0));

    let cluster = Cluster::start(dir.path(), 3, &[]);
    let cluster_id = cluster.cluster_id(0);
    assert_ne!(stray_cluster, cluster_id);
    let pointed = cluster.initial_cluster_with(&alone);
    let mut stray = Server::member(dir.path(), "x0", ports, &pointed, "existing", &[]);
    assert_ne!(stray.start_expecting_exit(), Some(0), "a member of another cluster started");
    let log = stray.log();
    let (ours, theirs) = (format!("{stray_cluster:x}"), format!("{cluster_id:x}"));
    assert!(log.contains(&ours) && log.contains(&theirs), "the refusal names neither cluster:\n{log}");
}

/// A member whose data dir was lost cannot start again as the member it was (it forgot
/// its log and its votes, and could help elect a leader that lacks committed writes); it
/// rejoins after `member remove` and `member add`, and catches up.
#[test]
fn a_member_that_lost_its_data_rejoins_only_after_remove_and_add() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(dir.path(), 3, &[]);
    let runtime = runtime();
    let leader = cluster.leader();
    let lost = (leader + 1) % 3;
    let put = PutRequest { key: b"kept".to_vec(), value: b"safe".to_vec(), ..Default::default() };
    runtime.block_on(async { kv(&cluster.members[leader]).await.put(put).await }).expect("put");

    cluster.members[lost].kill();
    std::fs::remove_dir_all(&cluster.members[lost].data_dir).expect("wipe the data dir");
    assert_ne!(cluster.members[lost].start_expecting_exit(), Some(0), "a wiped member started");
    let log = cluster.members[lost].log();
    assert!(log.contains("has already been bootstrapped"), "refusal:\n{log}");

    let lost_id = runtime.block_on(async {
        let mut client = ClusterClient::connect(cluster.members[leader].endpoint()).await.expect("connect");
        let list =
            client.member_list(MemberListRequest { linearizable: true }).await.expect("list").into_inner();
        let peer = cluster.members[lost].peer_url();
        list.members.iter().find(|m| m.peer_ur_ls.contains(&peer)).expect("the lost member is listed").id
    });
    let ports = (cluster.members[lost].client_port, cluster.members[lost].peer_port);
    let name = cluster.members[lost].name.clone();
    runtime.block_on(async {
        let mut client = ClusterClient::connect(cluster.members[leader].endpoint()).await.expect("connect");
        client.member_remove(MemberRemoveRequest { id: lost_id }).await.expect("remove the lost member");
        let add = MemberAddRequest { peer_ur_ls: vec![cluster.members[lost].peer_url()], is_learner: false };
        client.member_add(add).await.expect("add it again");
    });
    let initial_cluster =
        cluster.initial_cluster_with(&format!("{name}={}", cluster.members[lost].peer_url()));
    let mut rejoined = Server::member(&cluster.dir, &name, ports, &initial_cluster, "existing", &[]);
    rejoined.start();
    runtime.block_on(async {
        let get = RangeRequest { key: b"kept".to_vec(), serializable: true, ..Default::default() };
        let kvs = kv(&rejoined).await.range(get).await.expect("range").into_inner().kvs;
        assert_eq!(
            kvs.first().map(|kv| kv.value.clone()),
            Some(b"safe".to_vec()),
            "the rejoined member lacks data"
        );
    });
    cluster.members[lost] = rejoined;
    let revision = runtime.block_on(current_revision(&cluster.members[leader]));
    wait_same_hash(&runtime, &cluster, revision);
}

/// What a broken or hostile peer sends is refused, and the member keeps serving: log
/// entries that skip indexes (openraft would assert on them), and a snapshot whose data is
/// damaged (importing it would fail and stop the member).
#[test]
fn a_hostile_peer_cannot_stop_a_member() {
    use synod_api::synodpb as pb;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(dir.path(), 3, &[]);
    let runtime = runtime();
    let leader = cluster.leader();
    let target = (leader + 1) % 3;
    let ids: Vec<u64> = (0..3).map(|i| cluster.member_id(i)).collect();
    let cluster_id = cluster.cluster_id(0);
    let term = runtime.block_on(status(&cluster.members[target])).expect("status").raft_term;
    let address = |request: &mut tonic::metadata::MetadataMap| {
        request.insert("synod-cluster-id", format!("{cluster_id:x}").parse().expect("ascii"));
        request.insert("synod-from", format!("{:x}", ids[leader]).parse().expect("ascii"));
        request.insert("synod-to", format!("{:x}", ids[target]).parse().expect("ascii"));
    };
    let leader_id = pb::LeaderId { term, node_id: ids[leader] };
    let log_id = |index| pb::LogId { leader: Some(leader_id), index };
    let vote = pb::Vote { leader: Some(leader_id), committed: true };
    runtime.block_on(async {
        let mut client =
            pb::raft_client::RaftClient::connect(cluster.members[target].peer_url()).await.expect("connect");
        let entries = [0, 5, 3]
            .map(|index| pb::Entry {
                log_id: Some(log_id(index)),
                payload: Some(pb::entry::Payload::Blank(pb::Blank {})),
            })
            .to_vec();
        let append = pb::AppendEntriesRequest {
            group_id: 0,
            vote: Some(vote),
            prev_log_id: None,
            entries,
            leader_commit: None,
        };
        let mut request = tonic::Request::new(append);
        address(request.metadata_mut());
        let refused = client.append_entries(request).await.expect_err("entries that skip indexes");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");

        let nodes = (0..3)
            .map(|i| {
                let node = pb::MemberNode {
                    name: cluster.members[i].name.clone(),
                    peer_urls: vec![cluster.members[i].peer_url()],
                    client_urls: vec![],
                };
                (ids[i], node)
            })
            .collect();
        let membership = pb::Membership { configs: vec![pb::VoterSet { ids: ids.clone() }], nodes };
        let meta = pb::SnapshotMeta {
            last_log_id: Some(log_id(1_000_000)),
            last_membership: Some(pb::StoredMembership {
                log_id: Some(log_id(0)),
                membership: Some(membership),
            }),
        };
        let chunk = pb::SnapshotChunk {
            group_id: 0,
            vote: Some(vote),
            meta: Some(meta),
            data: b"SYNODSTATE1\nnot a state".to_vec(),
            done: true,
        };
        let mut cut = chunk.clone();
        let mut request = tonic::Request::new(futures::stream::iter(vec![chunk]));
        address(request.metadata_mut());
        let refused = client.install_snapshot(request).await.expect_err("a damaged snapshot");
        assert_eq!(refused.code(), tonic::Code::DataLoss, "{refused:?}");

        // A stream that ends before its last chunk.
        cut.data = b"SYNODSTATE1\n".to_vec();
        cut.done = false;
        let mut request = tonic::Request::new(futures::stream::iter(vec![cut]));
        address(request.metadata_mut());
        let refused = client.install_snapshot(request).await.expect_err("a cut snapshot");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    });
    // Neither left a file behind: each was built beside the state as it arrived.
    let leftovers = files_under(&cluster.members[target].data_dir)
        .into_iter()
        .filter(|path| path.to_string_lossy().contains(".incoming-"))
        .collect::<Vec<_>>();
    assert!(leftovers.is_empty(), "refused snapshots left {leftovers:?}");

    // The member is still up, in the cluster, and takes part in new writes.
    let put = PutRequest { key: b"after".to_vec(), value: b"hostile".to_vec(), ..Default::default() };
    runtime
        .block_on(async { kv(&cluster.members[target]).await.put(put).await })
        .expect("put through the target");
    let revision = runtime.block_on(current_revision(&cluster.members[leader]));
    wait_same_hash(&runtime, &cluster, revision);
    assert!(cluster.members[target].still_running(), "the target member stopped");
}
