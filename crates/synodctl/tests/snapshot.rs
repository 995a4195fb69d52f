//! `snapshot save` and `snapshot restore`: a member's state saved with etcdctl (and with
//! synodctl) and restored into a new 3-member cluster is the same keyspace, to the hash; the
//! same file is an etcd snapshot to etcdctl and to etcd; etcdctl's restore flags bootstrap
//! the cluster the members then start as; a snapshot saved from a real etcd moves onto
//! synod with its revisions and leases.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Member, START_DEADLINE, free_port};
use synod_api::etcdserverpb::kv_client::KvClient;
use synod_api::etcdserverpb::lease_client::LeaseClient;
use synod_api::etcdserverpb::maintenance_client::MaintenanceClient;
use synod_api::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, HashKvRequest, LeaseGrantRequest, LeaseLeasesRequest,
    LeaseTimeToLiveRequest, PutRequest, RangeRequest,
};
use tonic::transport::Channel;

const SYNODCTL: &str = env!("CARGO_BIN_EXE_synodctl");

/// A program for interoperability checks, if on PATH (required with SYNOD_REQUIRE_INTEROP=1).
fn interop(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()));
    if found.is_none() {
        assert!(
            std::env::var_os("SYNOD_REQUIRE_INTEROP").is_none_or(|v| v != "1"),
            "SYNOD_REQUIRE_INTEROP=1 but `{name}` is not on PATH"
        );
        eprintln!("skipping: `{name}` is not on PATH");
    }
    found
}

/// An etcd process on loopback ports; killed when dropped.
struct Etcd {
    client: String,
    child: std::process::Child,
}

impl Etcd {
    fn start(program: &Path, dir: &Path) -> Etcd {
        Etcd::start_on(program, &dir.join("etcd"))
    }

    /// Starts etcd on `data_dir`, which may hold a restored snapshot.
    fn start_on(program: &Path, data_dir: &Path) -> Etcd {
        let (client_port, peer_port) = (free_port(), free_port());
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let child = Command::new(program)
            .args(["--data-dir", &data_dir.display().to_string()])
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn etcd");
        Etcd { client, child }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A channel to `endpoint` once it answers a linearizable Range.
async fn serving(endpoint: &str) -> Channel {
    let start = Instant::now();
    loop {
        if let Ok(channel) = Channel::from_shared(endpoint.to_string()).expect("endpoint").connect().await {
            let mut kv = KvClient::new(channel.clone());
            if kv.range(RangeRequest { key: b"probe".to_vec(), ..Default::default() }).await.is_ok() {
                return channel;
            }
        }
        assert!(start.elapsed() < START_DEADLINE, "{endpoint} did not serve within {START_DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest { key: key.into(), value: value.into(), ..Default::default() }
}

/// Puts, overwrites, a delete, a key on a lease, a compaction, then more puts.
async fn write_history(channel: Channel) {
    let mut kv = KvClient::new(channel.clone());
    let mut lease = LeaseClient::new(channel);
    for i in 0..20 {
        kv.put(put(&format!("k{:02}", i % 7), &format!("v{i}"))).await.expect("put");
    }
    kv.delete_range(DeleteRangeRequest { key: "k03".into(), ..Default::default() }).await.expect("delete");
    lease.lease_grant(LeaseGrantRequest { id: 77, ttl: 600 }).await.expect("grant");
    kv.put(PutRequest { lease: 77, ..put("leased", "x") }).await.expect("put with lease");
    kv.compact(CompactionRequest { revision: 12, physical: true }).await.expect("compact");
    kv.put(put("k01", "after")).await.expect("put");
}

/// What a client sees of a keyspace: every key now and at a kept past revision, the
/// answer for a compacted one, and the leases with their keys, ids and terms removed.
async fn keyspace(channel: Channel) -> Vec<String> {
    let mut kv = KvClient::new(channel.clone());
    let mut lease = LeaseClient::new(channel);
    let mut seen = Vec::new();
    for revision in [0, 15, 11] {
        let all = RangeRequest { key: vec![0], range_end: vec![0], revision, ..Default::default() };
        seen.push(match kv.range(all).await {
            Ok(r) => {
                let r = r.into_inner();
                format!("rev {} {:?}", r.header.expect("header").revision, r.kvs)
            }
            Err(status) => format!("{:?} {}", status.code(), status.message()),
        });
    }
    let leases = lease.lease_leases(LeaseLeasesRequest {}).await.expect("leases").into_inner();
    for status in leases.leases {
        let ttl = lease
            .lease_time_to_live(LeaseTimeToLiveRequest { id: status.id, keys: true })
            .await
            .expect("time to live")
            .into_inner();
        seen.push(format!("lease {} granted {} keys {:?}", ttl.id, ttl.granted_ttl, ttl.keys));
    }
    seen
}

async fn hash_kv(channel: Channel, revision: i64) -> (u32, i64) {
    let mut maintenance = MaintenanceClient::new(channel);
    let hash = maintenance.hash_kv(HashKvRequest { revision }).await.expect("hash kv").into_inner();
    (hash.hash, hash.compact_revision)
}

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(program).env("ETCDCTL_API", "3").args(args).output().expect("run");
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

fn restore(file: &Path, data_dir: &Path) {
    let (ok, text) = run(
        SYNODCTL,
        &["snapshot", "restore", &file.display().to_string(), "--data-dir", &data_dir.display().to_string()],
    );
    assert!(ok, "restore failed: {text}");
}

/// A member's state saved with `etcdctl snapshot save` (and with `synodctl snapshot save`)
/// and restored into the three members of a new cluster: every member has the same keys,
/// revisions, compaction, leases and HashKV as the member it was saved from, and the new
/// cluster takes writes. A damaged file and an existing data dir are refused.
#[test]
fn a_restored_cluster_has_the_saved_keyspace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let original = Member::start(&dir.path().join("original"), free_port(), free_port());
    let (expected, revision, expected_hash) = runtime.block_on(async {
        let channel = serving(&original.url()).await;
        write_history(channel.clone()).await;
        let probe = RangeRequest { key: b"any".to_vec(), ..Default::default() };
        let revision = KvClient::new(channel.clone()).range(probe).await.expect("range").into_inner();
        let revision = revision.header.expect("header").revision;
        (keyspace(channel.clone()).await, revision, hash_kv(channel, revision).await)
    });

    let saved = dir.path().join("synodctl.db");
    let (ok, text) =
        run(SYNODCTL, &["--endpoints", &original.endpoint, "snapshot", "save", &saved.display().to_string()]);
    assert!(ok, "synodctl snapshot save: {text}");
    // It holds every key and the auth data: private to its owner, as etcdctl makes it.
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&saved).expect("saved").permissions());
    assert_eq!(mode & 0o777, 0o600, "snapshot save made the file {:o}", mode & 0o777);
    let mut files = vec![saved];
    if let Some(etcdctl) = interop("etcdctl") {
        let etcdctl = etcdctl.display().to_string();
        let file = dir.path().join("etcdctl.db");
        let (ok, text) = run(
            &etcdctl,
            &["--endpoints", &original.endpoint, "snapshot", "save", &file.display().to_string()],
        );
        assert!(ok, "etcdctl snapshot save: {text}");
        // etcdctl reads it as one of etcd's: bbolt's integrity check passes, and it finds
        // the revision in etcd's key bucket.
        let (ok, text) = run(&etcdctl, &["snapshot", "status", "-w", "json", &file.display().to_string()]);
        assert!(ok, "etcdctl snapshot status: {text}");
        let status: serde_json::Value = serde_json::from_str(text.trim()).expect("status JSON");
        assert_eq!(status["revision"], revision, "{text}");
        // synodctl reports the same hash, revision, key count and size, in every format.
        for format in ["simple", "json", "table"] {
            let path = file.display().to_string();
            let theirs = run(&etcdctl, &["snapshot", "status", "-w", format, &path]);
            let ours = run(SYNODCTL, &["snapshot", "status", "-w", format, &path]);
            assert!(ours.0, "synodctl snapshot status: {}", ours.1);
            assert_eq!(ours.1, theirs.1, "snapshot status -w {format}: synodctl (left) vs etcdctl (right)");
        }
        // And etcd restores it: the same keyspace served by etcd.
        if let Some(etcd_program) = interop("etcd") {
            let etcd_dir = dir.path().join("etcd-restored");
            let (ok, text) = run(
                &etcdctl,
                &[
                    "snapshot",
                    "restore",
                    &file.display().to_string(),
                    "--data-dir",
                    &etcd_dir.display().to_string(),
                ],
            );
            assert!(ok, "etcdctl snapshot restore: {text}");
            let etcd = Etcd::start_on(&etcd_program, &etcd_dir);
            let served = runtime.block_on(async { keyspace(serving(&etcd.client).await).await });
            assert_eq!(served, expected, "etcd serves the snapshot synod made");
        }
        files.push(file);
    }
    drop(original);

    for (n, file) in files.iter().enumerate() {
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let initial_cluster: Vec<String> =
            ports.iter().enumerate().map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}")).collect();
        let members: Vec<Member> = (0..3)
            .map(|i| {
                let data_dir = dir.path().join(format!("restored-{n}-m{i}"));
                restore(file, &data_dir);
                Member::start_in(&data_dir, &format!("m{i}"), ports[i], &initial_cluster.join(","))
            })
            .collect();
        runtime.block_on(async {
            for member in &members {
                let channel = serving(&member.url()).await;
                let restored = keyspace(channel.clone()).await;
                assert_eq!(restored, expected, "{} restored from {}", member.endpoint, file.display());
                assert_eq!(
                    hash_kv(channel, revision).await,
                    expected_hash,
                    "{} hashes differently",
                    member.endpoint
                );
            }
            let channel = serving(&members[0].url()).await;
            let written =
                KvClient::new(channel).put(put("new", "write")).await.expect("a write").into_inner();
            assert_eq!(
                written.header.expect("header").revision,
                revision + 1,
                "revisions go on from the snapshot's"
            );
        });
    }

    // An existing data dir, and damaged files, are refused; a failed restore leaves nothing.
    let existing = dir.path().join("restored-0-m0");
    let (ok, text) = run(
        SYNODCTL,
        &[
            "snapshot",
            "restore",
            &files[0].display().to_string(),
            "--data-dir",
            &existing.display().to_string(),
        ],
    );
    assert!(!ok && text.contains("exists"), "{text}");
    let damaged = dir.path().join("damaged.db");
    let bytes = std::fs::read(&files[0]).expect("read snapshot");
    std::fs::write(&damaged, &bytes[..bytes.len() / 2]).expect("write damaged snapshot");
    let target = dir.path().join("from-damaged");
    let (ok, text) = run(
        SYNODCTL,
        &["snapshot", "restore", &damaged.display().to_string(), "--data-dir", &target.display().to_string()],
    );
    assert!(!ok && text.contains("sha256"), "{text}");
    let (ok, text) = run(
        SYNODCTL,
        &[
            "snapshot",
            "restore",
            &damaged.display().to_string(),
            "--skip-hash-check",
            "--data-dir",
            &target.display().to_string(),
        ],
    );
    assert!(!ok, "a damaged snapshot restored: {text}");
    assert!(!target.exists(), "a failed restore left {} behind", target.display());
    let staging = dir.path().join(".from-damaged.restoring");
    assert!(!staging.exists(), "a failed restore left {} behind", staging.display());
}

/// etcd's disaster-recovery runbook as written: each member's data dir restored with
/// etcdctl's bootstrap flags (one with its log in --wal-dir), then each started with only
/// its own URLs. The members form the cluster the restore was told of, not the one-member
/// cluster their start flags describe, and serve the restored keyspace. Flags that do not
/// list the member are refused before anything is written.
#[test]
fn etcdctls_restore_flags_make_the_cluster_the_members_start_as() {
    use synod_api::etcdserverpb::MemberListRequest;
    use synod_api::etcdserverpb::cluster_client::ClusterClient;
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let original = Member::start(&dir.path().join("original"), free_port(), free_port());
    let expected = runtime.block_on(async {
        let channel = serving(&original.url()).await;
        write_history(channel.clone()).await;
        keyspace(channel).await
    });
    let saved = dir.path().join("saved.db").display().to_string();
    let (ok, text) = run(SYNODCTL, &["--endpoints", &original.endpoint, "snapshot", "save", &saved]);
    assert!(ok, "snapshot save: {text}");
    drop(original);

    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let peer = |i: usize| format!("http://127.0.0.1:{}", ports[i].1);
    let cluster = (0..3).map(|i| format!("m{i}={}", peer(i))).collect::<Vec<_>>().join(",");
    let restore_args = |i: usize| -> Vec<String> {
        let data_dir = dir.path().join(format!("m{i}")).display().to_string();
        let mut args: Vec<String> =
            ["snapshot", "restore", &saved, "--name", &format!("m{i}"), "--data-dir", &data_dir]
                .iter()
                .map(|s| s.to_string())
                .collect();
        args.extend([
            "--initial-cluster".into(),
            cluster.clone(),
            "--initial-cluster-token".into(),
            "rebuilt".into(),
        ]);
        args.extend(["--initial-advertise-peer-urls".into(), peer(i)]);
        args
    };
    // Not listed, or listed with other URLs: refused, and nothing written.
    let mut wrong = restore_args(0);
    wrong[4] = "m9".into();
    let (ok, text) = run(SYNODCTL, &wrong.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!ok && text.contains("does not list this member's name \"m9\""), "{text}");
    let mut wrong = restore_args(0);
    *wrong.last_mut().expect("peer URL") = peer(1);
    let (ok, text) = run(SYNODCTL, &wrong.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!ok && text.contains("--initial-advertise-peer-urls"), "{text}");
    assert!(!dir.path().join("m0").exists(), "a refused restore wrote its data dir");

    let wal_dir = dir.path().join("m2-wal").display().to_string();
    let members: Vec<Member> = (0..3)
        .map(|i| {
            let mut args = restore_args(i);
            let mut extra = Vec::new();
            if i == 2 {
                args.extend(["--wal-dir".into(), wal_dir.clone()]);
                extra.extend(["--wal-dir".into(), wal_dir.clone()]);
            }
            let (ok, text) = run(SYNODCTL, &args.iter().map(String::as_str).collect::<Vec<_>>());
            assert!(ok, "restore m{i}: {text}");
            // The start flags describe a one-member cluster; the restore's record wins.
            let alone = format!("m{i}={}", peer(i));
            Member::start_with(&dir.path().join(format!("m{i}")), &format!("m{i}"), ports[i], &alone, &extra)
        })
        .collect();
    assert!(
        std::fs::read_dir(&wal_dir).expect("the wal dir").next().is_some(),
        "the restore with --wal-dir left its log dir empty"
    );
    runtime.block_on(async {
        for member in &members {
            let channel = serving(&member.url()).await;
            let listed = ClusterClient::new(channel.clone())
                .member_list(MemberListRequest { linearizable: true })
                .await
                .expect("member list")
                .into_inner();
            let mut names: Vec<String> = listed.members.into_iter().map(|m| m.name).collect();
            names.sort();
            assert_eq!(names, ["m0", "m1", "m2"], "{} lists", member.endpoint);
            assert_eq!(keyspace(channel).await, expected, "{} serves", member.endpoint);
        }
    });
}

/// A member added to a cluster that began from a restore is sent the restored data: the
/// restored member cuts its log behind a snapshot of it, so the newcomer gets that snapshot
/// and not a log that starts after the data (which left it with an empty keyspace).
#[test]
fn a_member_added_to_a_restored_cluster_gets_the_restored_data() {
    use synod_api::etcdserverpb::cluster_client::ClusterClient;
    use synod_api::etcdserverpb::{MemberAddRequest, MemberPromoteRequest};
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let original = Member::start(&dir.path().join("original"), free_port(), free_port());
    runtime.block_on(async { write_history(serving(&original.url()).await).await });
    let saved = dir.path().join("saved.db");
    let (ok, text) =
        run(SYNODCTL, &["--endpoints", &original.endpoint, "snapshot", "save", &saved.display().to_string()]);
    assert!(ok, "snapshot save: {text}");
    drop(original);

    restore(&saved, &dir.path().join("r0"));
    let ports: Vec<(u16, u16)> = (0..2).map(|_| (free_port(), free_port())).collect();
    let r0 = Member::start_in(
        &dir.path().join("r0"),
        "r0",
        ports[0],
        &format!("r0=http://127.0.0.1:{}", ports[0].1),
    );
    let r1_peer = format!("http://127.0.0.1:{}", ports[1].1);
    let (expected, hash, r1_id) = runtime.block_on(async {
        let channel = serving(&r0.url()).await;
        let mut cluster = ClusterClient::new(channel.clone());
        let add = MemberAddRequest { peer_ur_ls: vec![r1_peer.clone()], is_learner: true };
        let added = cluster.member_add(add).await.expect("member add").into_inner();
        let id = added.member.expect("the added member").id;
        (keyspace(channel.clone()).await, hash_kv(channel, 0).await, id)
    });
    let cluster = format!("r0=http://127.0.0.1:{},r1={r1_peer}", ports[0].1);
    let existing = ["--initial-cluster-state".to_string(), "existing".to_string()];
    let r1 = Member::start_with(&dir.path().join("r1"), "r1", ports[1], &cluster, &existing);
    runtime.block_on(async {
        // Promoted once it has caught up (the leader refuses before), as an operator would.
        let mut cluster = ClusterClient::new(serving(&r0.url()).await);
        let deadline = Instant::now() + START_DEADLINE;
        while cluster.member_promote(MemberPromoteRequest { id: r1_id }).await.is_err() {
            assert!(Instant::now() < deadline, "the learner never caught up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let channel = serving(&r1.url()).await;
        assert_eq!(hash_kv(channel.clone(), 0).await, hash, "the added member's keyspace differs");
        assert_eq!(keyspace(channel).await, expected, "the added member's keys and leases");
    });
}

/// A snapshot saved from a real etcd restores into a synod member that answers every
/// read of the keyspace (now, at a kept past revision, at a compacted one) and every lease
/// question exactly as that etcd did.
#[test]
fn an_etcd_snapshot_moves_onto_synod() {
    let Some(etcd_program) = interop("etcd") else { return };
    let Some(etcdctl) = interop("etcdctl") else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let etcd = Etcd::start(&etcd_program, dir.path());
    let expected = runtime.block_on(async {
        let channel = serving(&etcd.client).await;
        write_history(channel.clone()).await;
        keyspace(channel).await
    });
    let file = dir.path().join("etcd.db");
    let address = etcd.client.trim_start_matches("http://").to_string();
    let (ok, text) = run(
        &etcdctl.display().to_string(),
        &["--endpoints", &address, "snapshot", "save", &file.display().to_string()],
    );
    assert!(ok, "etcdctl snapshot save: {text}");
    drop(etcd);

    let data_dir = dir.path().join("migrated");
    restore(&file, &data_dir);
    let member = Member::start(&data_dir, free_port(), free_port());
    let actual = runtime.block_on(async { keyspace(serving(&member.url()).await).await });
    assert_eq!(actual, expected);

    // A damaged etcd database, restored without the checksum check, is refused or read,
    // never a crash: every 512th byte flipped in turn, and the file cut short.
    let bytes = std::fs::read(&file).expect("read the etcd snapshot");
    let mut damaged: Vec<Vec<u8>> = (0..bytes.len() - 32)
        .step_by(512)
        .map(|at| {
            let mut copy = bytes.clone();
            copy[at] ^= 0x5a;
            copy
        })
        .collect();
    damaged.push(bytes[..bytes.len() / 2].to_vec());
    for (n, copy) in damaged.iter().enumerate() {
        let path = dir.path().join(format!("damaged-{n}.db"));
        std::fs::write(&path, copy).expect("write a damaged copy");
        let target = dir.path().join(format!("from-damaged-{n}"));
        let output = Command::new(SYNODCTL)
            .args(["snapshot", "restore", &path.display().to_string(), "--skip-hash-check"])
            .args(["--data-dir", &target.display().to_string()])
            .output()
            .expect("run synodctl");
        let code = output.status.code();
        assert!(
            matches!(code, Some(0) | Some(1)),
            "restoring damaged copy {n} exited with {code:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
