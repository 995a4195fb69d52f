//! Power cuts against a single-member group on simulated disks: whatever the consensus
//! layer acknowledged survives losing every write that was not synced, and the log is never
//! purged past what the durable state holds.
//!
//! A `kill -9` cannot test this (the kernel still writes out what the process wrote), so the
//! stores run on `SimDir` and `SimDisk`, which drop unsynced writes when the power goes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use synod_api::etcdserverpb::{PutRequest, RangeRequest};
use synod_api::synodpb::{Command, command};
use synod_base::{GroupId, limits};
use synod_consensus::{Bootstrap, Consensus, ConsensusOptions, MemberNode};
use synod_mvcc::Response;
use synod_storage::sim_disk::{SimDir, SimDisk};
use synod_storage::{LogStore, StateStore};

const MEMBER: u64 = 1;

struct Disks {
    log: SimDir,
    state: SimDisk,
    snapshots: tempfile::TempDir,
}

impl Disks {
    fn new() -> Disks {
        Disks { log: SimDir::new(), state: SimDisk::new(), snapshots: tempfile::tempdir().expect("tempdir") }
    }

    fn power_cut(&self) {
        self.log.power_cut(None);
        self.state.power_cut();
    }

    fn power_on(&self) {
        self.log.power_on();
        self.state.power_on();
    }
}

async fn start(disks: &Disks, snapshot_count: u64, catchup_entries: u64) -> (Consensus, Arc<StateStore>) {
    let log = Arc::new(LogStore::open_on(disks.log.clone(), "log").expect("open log"));
    let state =
        Arc::new(StateStore::open_on(disks.state.clone(), "state", GroupId::FIRST).expect("open state"));
    let node = MemberNode {
        name: "power".into(),
        peer_urls: vec!["http://127.0.0.1:1".into()],
        client_urls: vec![],
    };
    let consensus = Consensus::start(ConsensusOptions {
        group: GroupId::FIRST,
        member_id: MEMBER,
        cluster_id: 7,
        name: "power".into(),
        client_urls: vec![],
        bootstrap: Bootstrap::New(BTreeMap::from([(MEMBER, node)])),
        heartbeat_interval_ms: 100,
        election_timeout_ms: 1000,
        snapshot_count,
        snapshot_catchup_entries: catchup_entries,
        max_request_bytes: limits::REQUEST_BYTES_DEFAULT,
        snapshot_dir: snapshot_dir(disks.snapshots.path()),
        snapshot_bytes_max: u64::MAX,
        log,
        state: state.clone(),
        observer: Arc::new(synod_consensus::NoObserver),
        probe_interval: None,
        dialer: Arc::new(synod_consensus::GrpcDialer::default()),
        disk_io: synod_consensus::DiskIo::Threads,
    })
    .await
    .expect("start consensus");
    (consensus, state)
}

fn snapshot_dir(root: &Path) -> std::path::PathBuf {
    root.join("snap")
}

fn put_command(i: usize) -> Command {
    Command {
        op: Some(command::Op::Put(PutRequest {
            key: format!("k{i:05}").into_bytes(),
            value: format!("v{i}").into_bytes(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Restarts on the surviving disks and checks every acknowledged write, once the member has
/// applied what its log holds.
async fn check_after_restart(disks: &Disks, acked: &[(usize, i64)]) {
    disks.power_on();
    let (consensus, state) = start(disks, limits::SNAPSHOT_COUNT_DEFAULT, limits::LOG_CATCHUP_ENTRIES).await;
    consensus.read_barrier().await.expect("the restarted member serves linearizable reads");
    for &(i, revision) in acked {
        let key = format!("k{i:05}").into_bytes();
        let response =
            state.range(&RangeRequest { key, ..Default::default() }).expect("range").expect("valid");
        let kv = response
            .kvs
            .first()
            .unwrap_or_else(|| panic!("acknowledged write {i} was lost in the power cut"));
        assert_eq!(
            (kv.value.clone(), kv.mod_revision),
            (format!("v{i}").into_bytes(), revision),
            "write {i}"
        );
    }
    consensus.shutdown().await;
}

/// A power cut right after writes were acknowledged loses none of them: a write is
/// acknowledged only after the log's fsync, and on restart the log is replayed into the
/// state, which rolled back to its last checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_power_cut() {
    let disks = Disks::new();
    let (consensus, _state) =
        start(&disks, limits::SNAPSHOT_COUNT_DEFAULT, limits::LOG_CATCHUP_ENTRIES).await;
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let consensus = consensus.clone();
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for i in (writer..400).step_by(8) {
                match consensus.propose(put_command(i)).await.expect("propose") {
                    Ok(Response::Put(p)) => acks.push((i, p.header.expect("header").revision)),
                    other => panic!("unexpected outcome {other:?}"),
                }
            }
            acks
        }));
    }
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.expect("writer"));
    }
    // The power goes before the member can make anything else durable.
    disks.power_cut();
    consensus.shutdown().await;
    assert_eq!(acked.len(), 400);
    check_after_restart(&disks, &acked).await;
}

/// The log is purged only behind the durable state: with a snapshot after every entry and
/// no entries kept behind it, the log is purged as fast as snapshots are built, and a power
/// cut the moment the first purge shows still finds every acknowledged write, in the
/// durable state or in the log's remaining tail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_never_outruns_the_durable_state() {
    let disks = Arc::new(Disks::new());
    let (consensus, _state) = start(&disks, 1, 0).await;
    let purged = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let (consensus, purged, disks) = (consensus.clone(), purged.clone(), disks.clone());
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for i in (writer..20_000).step_by(8) {
                if purged.load(Ordering::Acquire) {
                    break;
                }
                match consensus.propose(put_command(i)).await {
                    Ok(Ok(Response::Put(p))) => acks.push((i, p.header.expect("header").revision)),
                    Ok(other) => panic!("unexpected outcome {other:?}"),
                    // The power is gone.
                    Err(_) => break,
                }
                // Cut the power the moment a purge shows, before a checkpoint can paper
                // over a purge that went too far.
                if consensus.status().first_log_index > 1 && !purged.swap(true, Ordering::AcqRel) {
                    disks.power_cut();
                }
            }
            acks
        }));
    }
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.expect("writer"));
    }
    assert!(purged.load(Ordering::Acquire), "no purge happened in 20,000 writes");
    consensus.shutdown().await;
    check_after_restart(&disks, &acked).await;
}
