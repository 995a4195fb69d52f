//! Writes the seed corpus of every fuzz target into `fuzz/corpus/<target>/`: a few dozen
//! well-formed inputs per target, each named for what it holds, so that fuzzing starts
//! from the requests, log messages, snapshots and JSON bodies synod really sees instead of
//! from nothing. Run from `fuzz/`: `cargo run --example seeds`. It replaces the corpus
//! directories it writes; the output is the same on every run, so the committed corpus
//! changes only when this file does.

use std::path::{Path, PathBuf};

use prost::Message;
use synod_api::EtcdError;
use synod_api::etcdserverpb::alarm_request::AlarmAction;
use synod_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use synod_api::etcdserverpb::range_request::{SortOrder, SortTarget};
use synod_api::etcdserverpb::{
    AlarmRequest, AlarmType, CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest,
    LeaseKeepAliveRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest, MemberAddRequest, PutRequest,
    RangeRequest, RequestOp, TxnRequest, WatchCreateRequest, WatchRequest, request_op, watch_request,
};
use synod_api::synodpb::{
    AppendEntriesRequest, AppendEntriesResponse, ApplyResult, Blank, ClusterInfoResponse, Command,
    CounterAdd, CounterOp, Entry, ForwardOutcome, ForwardRequest, ForwardResponse, Identity,
    LeaderCallRequest, LeaderCallResponse, LeaderId, LeaseCheckpoint, LeaseCheckpoints, LogId, MemberAdd,
    MemberAttributes, MemberChangeRequest, MemberNode, Membership, PartialSuccess, ReadIndexResponse,
    RemovedMembers, SnapshotChunk, SnapshotMeta, StoredMembership, TransferLeaderRequest,
    TransferLeaderResponse, Vote, VoteRequest, VoteResponse, VoterSet, append_entries_response, apply_result,
    command, entry, leader_call_request, member_change_request, transfer_leader_response,
};
use synod_api::v3electionpb::CampaignRequest;
use synod_api::v3lockpb::LockRequest;
use synod_base::{GroupId, LogIndex};
use synod_fuzz::frames;
use synod_fuzz::kinds::{
    etcd_request as er, gateway_json as gj, log_decode as ld, log_segment as ls, snapshot_decode as sd,
};
use synod_fuzz::state_stream;
use synod_storage::StateStore;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    write(&root, "etcd_request", etcd_request());
    write(&root, "log_decode", log_decode());
    write(&root, "snapshot_decode", snapshot_decode());
    write(&root, "log_segment", log_segment());
    write(&root, "gateway_json", gateway_json());
    write(&root, "authority_rewrite", authority_rewrite());
}

fn write(root: &Path, target: &str, seeds: Vec<(&str, Vec<u8>)>) {
    let dir: PathBuf = root.join(target);
    std::fs::create_dir_all(&dir).expect("create the corpus directory");
    // The old seeds go; the inputs kept from crashes (`regression-*`) stay.
    for file in std::fs::read_dir(&dir).expect("read the corpus directory") {
        let path = file.expect("a corpus file").path();
        if !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("regression-")) {
            std::fs::remove_file(&path).expect("remove an old seed");
        }
    }
    for (name, bytes) in &seeds {
        std::fs::write(dir.join(name), bytes).expect("write a seed");
    }
    println!("{target}: {} seeds", seeds.len());
}

fn one(kind: u8, message: &impl Message) -> Vec<u8> {
    frames::join(&[(kind, message.encode_to_vec())])
}

fn b(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest { key: b(key), value: b(value), ..Default::default() }
}

fn range(key: &str, end: &str) -> RangeRequest {
    RangeRequest { key: b(key), range_end: b(end), ..Default::default() }
}

fn op_put(key: &str, value: &str) -> RequestOp {
    RequestOp { request: Some(request_op::Request::RequestPut(put(key, value))) }
}

fn op_range(key: &str, end: &str) -> RequestOp {
    RequestOp { request: Some(request_op::Request::RequestRange(range(key, end))) }
}

fn op_delete(key: &str, end: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(DeleteRangeRequest {
            key: b(key),
            range_end: b(end),
            prev_kv: true,
        })),
    }
}

fn compare(key: &str, target: CompareTarget, result: CompareResult, value: TargetUnion) -> Compare {
    Compare {
        key: b(key),
        target: target as i32,
        result: result as i32,
        target_union: Some(value),
        ..Default::default()
    }
}

fn cmd(op: command::Op) -> Command {
    synod_fuzz::kv::command(op)
}

fn counter_add() -> Command {
    cmd(command::Op::CounterAdd(CounterAdd {
        key: b("counter"),
        ops: vec![
            CounterOp { session: 0, sequence: 0, delta: 1, answered_below: 0, ..Default::default() },
            CounterOp { session: 7, sequence: 1, delta: 5, answered_below: 0, ..Default::default() },
            CounterOp { session: 7, sequence: 1, delta: 5, answered_below: 1, ..Default::default() },
        ],
    }))
}

fn etcd_request() -> Vec<(&'static str, Vec<u8>)> {
    let cas = TxnRequest {
        compare: vec![compare("a", CompareTarget::Value, CompareResult::Equal, TargetUnion::Value(b("10")))],
        success: vec![op_put("a", "11"), op_range("a", "")],
        failure: vec![op_range("a", "")],
    };
    let nested = TxnRequest {
        compare: vec![compare("c", CompareTarget::Version, CompareResult::Greater, TargetUnion::Version(0))],
        success: vec![
            op_delete("k/", "k0"),
            RequestOp {
                request: Some(request_op::Request::RequestTxn(TxnRequest {
                    compare: vec![compare(
                        "leased",
                        CompareTarget::Lease,
                        CompareResult::Equal,
                        TargetUnion::Lease(7),
                    )],
                    success: vec![op_put("n", "1")],
                    failure: vec![op_put("n", "2")],
                })),
            },
        ],
        failure: vec![op_put("z", "0")],
    };
    let read_only = TxnRequest {
        compare: vec![Compare {
            range_end: vec![0],
            ..compare("a", CompareTarget::Mod, CompareResult::Less, TargetUnion::ModRevision(100))
        }],
        success: vec![op_range("\0", "\0")],
        failure: vec![],
    };
    let duplicate =
        TxnRequest { compare: vec![], success: vec![op_put("d", "1"), op_put("d", "2")], failure: vec![] };
    let sorted = RangeRequest {
        limit: 1,
        sort_order: SortOrder::Descend as i32,
        sort_target: SortTarget::Value as i32,
        ..range("k/", "k0")
    };
    let filtered = RangeRequest {
        min_mod_revision: 4,
        max_create_revision: 9,
        keys_only: true,
        serializable: true,
        ..range("\0", "\0")
    };
    let watch = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(WatchCreateRequest {
            key: b("a"),
            range_end: b("b"),
            start_revision: 2,
            prev_kv: true,
            filters: vec![1],
            ..Default::default()
        })),
    };
    let session = frames::join(&[
        (er::PUT, put("x", "1").encode_to_vec()),
        (er::TXN, cas.encode_to_vec()),
        (er::LEASE_GRANT, LeaseGrantRequest { ttl: 5, id: 99 }.encode_to_vec()),
        (er::PUT, PutRequest { lease: 99, ..put("x", "2") }.encode_to_vec()),
        (er::COMPACTION, CompactionRequest { revision: 8, physical: true }.encode_to_vec()),
        (er::RANGE, RangeRequest { revision: 6, ..range("\0", "\0") }.encode_to_vec()),
        (
            er::DELETE_RANGE,
            DeleteRangeRequest { key: b("a"), range_end: vec![0], prev_kv: true }.encode_to_vec(),
        ),
        (er::LEASE_REVOKE, LeaseRevokeRequest { id: 99 }.encode_to_vec()),
        (er::COMMAND, counter_add().encode_to_vec()),
        (er::RANGE, range("\0", "\0").encode_to_vec()),
    ]);
    vec![
        ("range-all", one(er::RANGE, &range("\0", "\0"))),
        ("range-prefix-sorted", one(er::RANGE, &sorted)),
        ("range-filtered", one(er::RANGE, &filtered)),
        ("range-compacted", one(er::RANGE, &RangeRequest { revision: 2, ..range("a", "") })),
        ("range-count-only", one(er::RANGE, &RangeRequest { count_only: true, ..range("a", "z") })),
        ("put", one(er::PUT, &put("a", "v"))),
        ("put-prev-kv", one(er::PUT, &PutRequest { prev_kv: true, ..put("a", "v") })),
        ("put-ignore-value", one(er::PUT, &PutRequest { ignore_value: true, ..put("a", "") })),
        ("put-lease", one(er::PUT, &PutRequest { lease: 7, ..put("p", "v") })),
        ("put-lease-missing", one(er::PUT, &PutRequest { lease: 8, ..put("p", "v") })),
        (
            "delete-prefix",
            one(er::DELETE_RANGE, &DeleteRangeRequest { key: b("k/"), range_end: b("k0"), prev_kv: true }),
        ),
        ("delete-key", one(er::DELETE_RANGE, &DeleteRangeRequest { key: b("leased"), ..Default::default() })),
        ("txn-cas", one(er::TXN, &cas)),
        ("txn-nested", one(er::TXN, &nested)),
        ("txn-read-only", one(er::TXN, &read_only)),
        ("txn-duplicate-key", one(er::TXN, &duplicate)),
        ("compact-current", one(er::COMPACTION, &CompactionRequest { revision: 12, physical: false })),
        ("compact-future", one(er::COMPACTION, &CompactionRequest { revision: 100, physical: false })),
        ("lease-grant", one(er::LEASE_GRANT, &LeaseGrantRequest { ttl: 10, id: 0 })),
        ("lease-revoke", one(er::LEASE_REVOKE, &LeaseRevokeRequest { id: 7 })),
        ("command-counter-add", one(er::COMMAND, &counter_add())),
        (
            "command-lease-checkpoints",
            one(
                er::COMMAND,
                &cmd(command::Op::LeaseCheckpoints(LeaseCheckpoints {
                    checkpoints: vec![LeaseCheckpoint { id: 7, remaining_ms: 30_000 }],
                })),
            ),
        ),
        (
            "command-member-attributes",
            one(
                er::COMMAND,
                &cmd(command::Op::MemberAttributes(MemberAttributes {
                    member_id: 1,
                    name: "m1".into(),
                    client_urls: vec!["http://127.0.0.1:2379".into()],
                })),
            ),
        ),
        (
            "alarm-nospace",
            one(
                er::ALARM,
                &AlarmRequest {
                    action: AlarmAction::Activate as i32,
                    member_id: 1,
                    alarm: AlarmType::Nospace as i32,
                },
            ),
        ),
        ("watch-create", one(er::WATCH, &watch)),
        ("lease-keep-alive", one(er::LEASE_KEEP_ALIVE, &LeaseKeepAliveRequest { id: 7 })),
        ("lease-time-to-live", one(er::LEASE_TIME_TO_LIVE, &LeaseTimeToLiveRequest { id: 7, keys: true })),
        ("lock", one(er::LOCK, &LockRequest { name: b("mutex"), lease: 7 })),
        ("campaign", one(er::CAMPAIGN, &CampaignRequest { name: b("election"), lease: 7, value: b("me") })),
        (
            "member-add",
            one(
                er::MEMBER_ADD,
                &MemberAddRequest { peer_ur_ls: vec!["http://10.0.0.4:2380".into()], is_learner: true },
            ),
        ),
        ("session", session),
    ]
}

fn leader(term: u64, node_id: u64) -> Option<LeaderId> {
    Some(LeaderId { term, node_id })
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId { leader: leader(term, 1), index }
}

fn vote(term: u64) -> Vote {
    Vote { leader: leader(term, 1), committed: true }
}

fn membership() -> Membership {
    // One node only: `nodes` is a hash map, whose encoding order would differ between runs.
    let node = MemberNode {
        name: "m1".into(),
        peer_urls: vec!["http://10.0.0.1:2380".into()],
        client_urls: vec!["http://10.0.0.1:2379".into()],
    };
    Membership { configs: vec![VoterSet { ids: vec![1] }], nodes: [(1, node)].into() }
}

fn stored_membership() -> StoredMembership {
    StoredMembership { log_id: Some(log_id(1, 1)), membership: Some(membership()) }
}

fn entry_of(index: u64, payload: entry::Payload) -> Entry {
    Entry { log_id: Some(log_id(2, index)), payload: Some(payload) }
}

fn log_decode() -> Vec<(&'static str, Vec<u8>)> {
    let entries = vec![
        entry_of(5, entry::Payload::Blank(Blank {})),
        entry_of(6, entry::Payload::Command(cmd(command::Op::Put(put("a", "from-log"))))),
        entry_of(7, entry::Payload::Command(counter_add())),
        entry_of(8, entry::Payload::Membership(membership())),
    ];
    let append = AppendEntriesRequest {
        group_id: 1,
        vote: Some(vote(2)),
        prev_log_id: Some(log_id(1, 4)),
        entries: entries.clone(),
        leader_commit: Some(log_id(2, 6)),
    };
    let snapshot_meta =
        SnapshotMeta { last_log_id: Some(log_id(2, 9)), last_membership: Some(stored_membership()) };
    let forward_response = ForwardResponse {
        outcomes: vec![
            ForwardOutcome {
                index: 10,
                result: Some(ApplyResult {
                    result: Some(apply_result::Result::Error(EtcdError::KeyNotFound.message().into())),
                }),
                ..Default::default()
            },
            ForwardOutcome {
                error: EtcdError::NotLeader.message().into(),
                leader_id: 2,
                ..Default::default()
            },
        ],
    };
    vec![
        ("entry-blank", one(ld::ENTRY, &entries[0])),
        ("entry-put", one(ld::ENTRY, &entries[1])),
        ("entry-counter-add", one(ld::ENTRY, &entries[2])),
        ("entry-membership", one(ld::ENTRY, &entries[3])),
        ("append-request", one(ld::APPEND_REQUEST, &append)),
        (
            "append-heartbeat",
            one(ld::APPEND_REQUEST, &AppendEntriesRequest { entries: vec![], ..append.clone() }),
        ),
        (
            "append-partial-success",
            one(
                ld::APPEND_RESPONSE,
                &AppendEntriesResponse {
                    result: Some(append_entries_response::Result::PartialSuccess(PartialSuccess {
                        matched: Some(log_id(2, 6)),
                    })),
                },
            ),
        ),
        (
            "append-higher-vote",
            one(
                ld::APPEND_RESPONSE,
                &AppendEntriesResponse { result: Some(append_entries_response::Result::HigherVote(vote(3))) },
            ),
        ),
        (
            "vote-request",
            one(
                ld::VOTE_REQUEST,
                &VoteRequest {
                    group_id: 1,
                    vote: Some(Vote { committed: false, ..vote(3) }),
                    last_log_id: Some(log_id(2, 8)),
                    leadership_transfer: true,
                },
            ),
        ),
        (
            "vote-response",
            one(
                ld::VOTE_RESPONSE,
                &VoteResponse { vote: Some(vote(3)), vote_granted: true, last_log_id: Some(log_id(2, 8)) },
            ),
        ),
        ("vote", one(ld::VOTE, &vote(4))),
        ("log-id", one(ld::LOG_ID, &log_id(4, 1000))),
        ("membership", one(ld::MEMBERSHIP, &membership())),
        ("stored-membership", one(ld::STORED_MEMBERSHIP, &stored_membership())),
        ("snapshot-meta", one(ld::SNAPSHOT_META, &snapshot_meta)),
        (
            "snapshot-chunk",
            one(
                ld::SNAPSHOT_CHUNK,
                &SnapshotChunk {
                    group_id: 1,
                    vote: Some(vote(2)),
                    meta: Some(snapshot_meta.clone()),
                    data: state_stream::MAGIC.to_vec(),
                    done: false,
                },
            ),
        ),
        (
            "transfer-request",
            one(
                ld::TRANSFER_REQUEST,
                &TransferLeaderRequest {
                    group_id: 1,
                    from_leader: Some(vote(2)),
                    to_node_id: 2,
                    last_log_id: Some(log_id(2, 9)),
                },
            ),
        ),
        (
            "transfer-response",
            one(
                ld::TRANSFER_RESPONSE,
                &TransferLeaderResponse { result: Some(transfer_leader_response::Result::Ok(Blank {})) },
            ),
        ),
        (
            "forward-request",
            one(
                ld::FORWARD_REQUEST,
                &ForwardRequest {
                    group_id: 1,
                    commands: vec![cmd(command::Op::Put(put("f", "1"))), counter_add()],
                },
            ),
        ),
        ("forward-response", one(ld::FORWARD_RESPONSE, &forward_response)),
        (
            "read-index-response",
            one(
                ld::READ_INDEX_RESPONSE,
                &ReadIndexResponse {
                    read_log_id: Some(log_id(2, 9)),
                    applied: Some(log_id(2, 8)),
                    error: EtcdError::LeaderChanged.message().into(),
                    leader_id: 1,
                },
            ),
        ),
        (
            "member-change-add",
            one(
                ld::MEMBER_CHANGE_REQUEST,
                &MemberChangeRequest {
                    group_id: 1,
                    change: Some(member_change_request::Change::Add(MemberAdd {
                        peer_urls: vec!["http://10.0.0.4:2380".into()],
                        is_learner: true,
                    })),
                },
            ),
        ),
        (
            "cluster-info",
            one(
                ld::CLUSTER_INFO_RESPONSE,
                &ClusterInfoResponse { cluster_id: 0xc1, membership: Some(membership()), started: vec![1] },
            ),
        ),
        (
            "leader-call-keep-alive",
            one(
                ld::LEADER_CALL_REQUEST,
                &LeaderCallRequest {
                    group_id: 1,
                    call: Some(leader_call_request::Call::LeaseKeepAlive(LeaseKeepAliveRequest { id: 7 })),
                },
            ),
        ),
        (
            "leader-call-error",
            one(
                ld::LEADER_CALL_RESPONSE,
                &LeaderCallResponse {
                    reply: None,
                    error: EtcdError::NotLeader.message().into(),
                    leader_id: 2,
                },
            ),
        ),
        (
            "identity",
            one(
                ld::IDENTITY,
                &Identity {
                    cluster_id: 0xc1,
                    member_id: 1,
                    name: "m1".into(),
                    peer_urls: vec!["http://10.0.0.1:2380".into()],
                },
            ),
        ),
        ("removed-members", one(ld::REMOVED_MEMBERS, &RemovedMembers { ids: vec![3, 4] })),
    ]
}

/// A state store with history: keys with versions, a deletion, leases, a counter session,
/// a compaction; applied as committed log entries.
fn store_with_history(keys: usize) -> StateStore {
    let store = StateStore::open_on(redb::backends::InMemoryBackend::new(), "seeds", GroupId(1))
        .expect("open an in-memory state store");
    let mut commands = vec![
        cmd(command::Op::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 7 })),
        cmd(command::Op::Put(PutRequest { lease: 7, ..put("leased", "x") })),
        cmd(command::Op::Put(put("a", "1"))),
        cmd(command::Op::Put(put("a", "2"))),
        cmd(command::Op::Put(put("b", "1"))),
        cmd(command::Op::DeleteRange(DeleteRangeRequest { key: b("b"), ..Default::default() })),
        counter_add(),
        cmd(command::Op::Compaction(CompactionRequest { revision: 4, physical: false })),
        cmd(command::Op::LeaseCheckpoints(LeaseCheckpoints {
            checkpoints: vec![LeaseCheckpoint { id: 7, remaining_ms: 12_000 }],
        })),
    ];
    for i in 0..keys {
        commands.push(cmd(command::Op::Put(put(&format!("key/{i:05}"), &format!("value {i}")))));
    }
    for (i, command) in commands.iter().enumerate() {
        let applied =
            store.apply(&[(LogIndex(i as u64 + 1), Some(command))], &[]).expect("apply a seed command");
        assert!(matches!(applied[0], Some(Ok(_))), "a seed command applies: {applied:?}");
    }
    store
}

fn export(store: &StateStore) -> Vec<u8> {
    let mut out = Vec::new();
    store.export(&mut out, &[]).expect("export the seed store");
    out
}

fn etcd_file(store: &StateStore) -> Vec<u8> {
    let mut file = tempfile::tempfile().expect("create a scratch file");
    let (_, written) = store.write_etcd_snapshot(&mut file).expect("write an etcd snapshot");
    let mut out = vec![0u8; written as usize];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut out, 0).expect("read the etcd snapshot back");
    out
}

/// The frames of an exported stream as `state_stream::build` reads them: records and meta
/// values unsealed, the end frame left for `build` to write.
fn describe(stream: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    let mut rest = &stream[state_stream::MAGIC.len()..];
    while rest.len() >= 9 {
        let kind = rest[0];
        let len = u32::from_le_bytes(rest[1..5].try_into().expect("4 bytes")) as usize;
        let payload = &rest[5..5 + len];
        rest = &rest[5 + len + 4..];
        match kind {
            state_stream::FRAME_RECORD => {
                let mut described = payload[..16].to_vec();
                described.extend_from_slice(&payload[16 + 4..]);
                frames.push((state_stream::SHAPE_RECORD, described));
            }
            state_stream::FRAME_META => {
                let key_len = u16::from_le_bytes([payload[0], payload[1]]) as usize;
                let mut described = vec![u8::try_from(key_len).expect("meta keys are short")];
                described.extend_from_slice(&payload[2..2 + key_len]);
                described.extend_from_slice(&payload[2 + key_len + 4..]);
                frames.push((state_stream::SHAPE_META, described));
            }
            _ => break,
        }
    }
    frames
}

fn tagged(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(body);
    out
}

/// Logs written by the real store (raw segment bytes) and described ones.
fn log_segment() -> Vec<(&'static str, Vec<u8>)> {
    use synod_storage::log_fs::LogDir;
    use synod_storage::sim_disk::SimDir;
    use synod_storage::{LogOp, LogOptions, LogStore};
    let dir = SimDir::new();
    let options = LogOptions { segment_bytes: 1 << 20, prepare_in_background: false, rewrite_below: 0.5 };
    let log = LogStore::open_on_with(dir.clone(), "seeds".into(), options).expect("open a log");
    log.put_meta("identity", b"member 1").expect("put meta");
    for i in 1..=12u64 {
        let entry = format!("entry {i}").into_bytes();
        log.write(&[LogOp::Append {
            group: GroupId(i % 2),
            entries: &[(LogIndex(i / 2 + 1), entry.as_slice())],
        }])
        .expect("append");
    }
    log.write(&[LogOp::PurgeThrough { group: GroupId(0), through: LogIndex(2) }]).expect("purge");
    log.truncate_from(GroupId(1), LogIndex(6)).expect("truncate");
    drop(log);
    let file = dir.open("0000000000000001.log").expect("the first segment");
    let mut bytes = vec![0u8; 4096];
    file.read_at(0, &mut bytes).expect("read the segment");
    let body = bytes[64..].to_vec();
    let append = |group: u8, first: u16, entries: &[&[u8]]| {
        let mut out = vec![group << 4];
        out.extend_from_slice(&first.to_le_bytes());
        out.push(entries.len() as u8);
        for entry in entries {
            out.push(entry.len() as u8);
            out.extend_from_slice(entry);
        }
        out
    };
    let mut described = append(0, 1, &[b"a", b"b", b"c"]);
    described.extend(append(1, 1, &[b"x"]));
    described.push(8); // a new record
    described.extend([5, 1, 0]); // purge group 0 through 1
    described.push(9); // a new segment
    described.extend({
        let mut rewrite = append(0, 2, &[b"b", b"c"]);
        rewrite[0] = 3;
        rewrite
    });
    described.extend([6, 3, b'v', b'a', b'l']); // put meta "identity"
    vec![("raw-written", tagged(ls::RAW, &body)), ("ops-described", tagged(ls::OPS, &described))]
}

fn snapshot_decode() -> Vec<(&'static str, Vec<u8>)> {
    let empty = StateStore::open_on(redb::backends::InMemoryBackend::new(), "seeds", GroupId(1))
        .expect("open an in-memory state store");
    let small = store_with_history(0);
    let larger = store_with_history(150);
    let small_stream = export(&small);
    let mut described = describe(&small_stream);
    let mut with_applied = described.clone();
    with_applied.push((state_stream::SHAPE_META, {
        let mut meta = vec![13];
        meta.extend_from_slice(b"applied_index");
        meta.extend_from_slice(&7u64.to_le_bytes());
        meta
    }));
    described.truncate(3);
    vec![
        ("state-empty", tagged(sd::STATE_STREAM, &export(&empty))),
        ("state-small", tagged(sd::STATE_STREAM, &small_stream)),
        ("state-frames-small", tagged(sd::STATE_FRAMES, &frames::join(&describe(&small_stream)))),
        ("state-frames-prefix", tagged(sd::STATE_FRAMES, &frames::join(&described))),
        ("state-frames-applied", tagged(sd::STATE_FRAMES, &frames::join(&with_applied))),
        ("etcd-empty", tagged(sd::ETCD_BBOLT, &etcd_file(&empty))),
        ("etcd-small", tagged(sd::ETCD_BBOLT, &etcd_file(&small))),
        ("etcd-branches", tagged(sd::ETCD_BBOLT, &etcd_file(&larger))),
    ]
}

fn gateway_json() -> Vec<(&'static str, Vec<u8>)> {
    let json = |kind: u8, body: &str| tagged(kind, body.as_bytes());
    vec![
        ("range", json(gj::RANGE, r#"{"key":"YQ==","range_end":"eg==","limit":"2","sort_order":"DESCEND"}"#)),
        ("range-camel", json(gj::RANGE, r#"{"key":"AA==","rangeEnd":"AA==","countOnly":true,"revision":5}"#)),
        ("range-null", json(gj::RANGE, r#"{"key":"YQ==","range_end":null,"sort_target":"MOD"}"#)),
        ("range-empty", json(gj::RANGE, "")),
        ("put", json(gj::PUT, r#"{"key":"Zm9v","value":"YmFy","prev_kv":true}"#)),
        ("put-lease", json(gj::PUT, r#"{"key":"cA==","value":"dg==","lease":"7"}"#)),
        ("delete-range", json(gj::DELETE_RANGE, r#"{"key":"ay8=","range_end":"azA=","prev_kv":true}"#)),
        (
            "txn",
            json(
                gj::TXN,
                r#"{"compare":[{"key":"YQ==","result":"EQUAL","target":"VALUE","value":"MTA="}],"success":[{"request_put":{"key":"YQ==","value":"MTE="}}],"failure":[{"request_range":{"key":"YQ=="}}]}"#,
            ),
        ),
        (
            "txn-nested",
            json(
                gj::TXN,
                r#"{"compare":[{"key":"Yw==","target":"VERSION","result":"GREATER","version":"0"}],"success":[{"request_txn":{"success":[{"request_delete_range":{"key":"ay8=","range_end":"azA="}}]}}]}"#,
            ),
        ),
        ("compaction", json(gj::COMPACTION, r#"{"revision":"8","physical":true}"#)),
        ("lease-grant", json(gj::LEASE_GRANT, r#"{"TTL":"30","ID":"0"}"#)),
        ("lease-revoke", json(gj::LEASE_REVOKE, r#"{"ID":"7"}"#)),
        ("lease-time-to-live", json(gj::LEASE_TIME_TO_LIVE, r#"{"ID":"7","keys":true}"#)),
        ("lease-leases", json(gj::LEASE_LEASES, "{}")),
        (
            "watch",
            json(
                gj::WATCH,
                r#"{"create_request":{"key":"YQ==","range_end":"Yg==","start_revision":"2","filters":["NODELETE"],"prev_kv":true}} {"progress_request":{}}"#,
            ),
        ),
        ("lease-keep-alive", json(gj::LEASE_KEEP_ALIVE, r#"{"ID":"7"}{"ID":"8"}"#)),
        ("alarm", json(gj::ALARM, r#"{"action":"ACTIVATE","memberID":"1","alarm":"NOSPACE"}"#)),
        ("status", json(gj::STATUS, "{}")),
        ("hash-kv", json(gj::HASH_KV, r#"{"revision":"3"}"#)),
        ("move-leader", json(gj::MOVE_LEADER, r#"{"targetID":"2"}"#)),
        ("member-add", json(gj::MEMBER_ADD, r#"{"peerURLs":["http://10.0.0.4:2380"],"isLearner":true}"#)),
        ("member-remove", json(gj::MEMBER_REMOVE, r#"{"ID":"4"}"#)),
        ("member-update", json(gj::MEMBER_UPDATE, r#"{"ID":"4","peerURLs":["http://10.0.0.5:2380"]}"#)),
        ("member-promote", json(gj::MEMBER_PROMOTE, r#"{"ID":"4"}"#)),
        ("lock", json(gj::LOCK, r#"{"name":"bXV0ZXg=","lease":"7"}"#)),
        ("unlock", json(gj::UNLOCK, r#"{"key":"bXV0ZXgvNw=="}"#)),
        ("campaign", json(gj::CAMPAIGN, r#"{"name":"ZWw=","lease":"7","value":"bWU="}"#)),
        (
            "proclaim",
            json(
                gj::PROCLAIM,
                r#"{"leader":{"name":"ZWw=","key":"ZWwvNw==","rev":"5","lease":"7"},"value":"bmV3"}"#,
            ),
        ),
        ("leader", json(gj::LEADER, r#"{"name":"ZWw="}"#)),
        ("resign", json(gj::RESIGN, r#"{"leader":{"name":"ZWw=","key":"ZWwvNw==","rev":"5","lease":"7"}}"#)),
        ("observe", json(gj::OBSERVE, r#"{"name":"ZWw="}"#)),
        ("counter-add", json(gj::COUNTER_ADD, r#"{"key":"Yw==","delta":"5","session":"7","sequence":"1"}"#)),
        ("counter-get", json(gj::COUNTER_GET, r#"{"key":"Yw==","serializable":true}"#)),
    ]
}

/// HTTP/2 frame: a 24-bit length, the type, the flags and the stream id, then the payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    frame.extend([kind, flags]);
    frame.extend(stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// What etcdctl 3.4 sends for a Range (`:authority` a whole URL, in a literal field with
/// the static table's name), in frames split and padded several ways, and HTTP/1.1; each
/// read whole (chunk byte 0) and in chunks of 7 (chunk byte 6).
fn authority_rewrite() -> Vec<(&'static str, Vec<u8>)> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let literal = |index: u8, value: &[u8]| {
        let mut field = vec![index, value.len() as u8];
        field.extend_from_slice(value);
        field
    };
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
    block.extend(literal(1, b"http://127.0.0.1:2379"));
    block.extend(literal(4, b"/etcdserverpb.KV/Range"));
    let h2 = |frames: Vec<Vec<u8>>| {
        [PREFACE.to_vec(), h2_frame(4, 0, 0, b"")].into_iter().chain(frames).collect::<Vec<_>>().concat()
    };
    let mut padded = vec![2, 0, 0, 0, 0, 16];
    padded.extend(&block);
    padded.extend([0, 0]);
    let streams = [
        (
            "h2-range-with-url-authority",
            h2(vec![h2_frame(1, 0x4, 1, &block), h2_frame(0, 0x1, 1, &[0, 0, 0, 0, 2, 10, 0])]),
        ),
        (
            "h2-split-continuation",
            h2(vec![h2_frame(1, 0, 3, &block[..10]), h2_frame(9, 0x4, 3, &block[10..])]),
        ),
        ("h2-padded-priority", h2(vec![h2_frame(1, 0x4 | 0x8 | 0x20, 5, &padded)])),
        ("http1-health", b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:2379\r\n\r\n".to_vec()),
        ("preface-only", PREFACE.to_vec()),
    ];
    let mut seeds = Vec::new();
    for (name, stream) in streams {
        for chunk in [0u8, 6] {
            let name: &'static str = Box::leak(format!("{name}-{chunk}").into_boxed_str());
            seeds.push((name, [vec![chunk], stream.clone()].concat()));
        }
    }
    seeds
}
