//! The state and log files across reopens and damage: what was applied stays applied,
//! what was checkpointed survives, and a damaged file is refused rather than served.

use synod_api::etcdserverpb::{PutRequest, RangeRequest};
use synod_api::synodpb::{Command, command};
use synod_base::{GroupId, LogIndex};
use synod_mvcc::Response;
use synod_storage::{LogStore, StateStore, StorageError};

fn put(key: &str, value: &str) -> Command {
    Command {
        op: Some(command::Op::Put(PutRequest { key: key.into(), value: value.into(), ..Default::default() })),
        ..Default::default()
    }
}

fn get(state: &StateStore, key: &str) -> Option<(Vec<u8>, i64)> {
    let request = RangeRequest { key: key.into(), ..Default::default() };
    let response = state.range(&request).unwrap().unwrap();
    response.kvs.first().map(|kv| (kv.value.clone(), kv.mod_revision))
}

/// Applied entries are readable at once and, after a checkpoint, survive a reopen with
/// their revisions and the applied index.
#[test]
fn checkpointed_state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    {
        let state = StateStore::open(&path, GroupId::FIRST).unwrap();
        let commands = [put("a", "1"), put("b", "2"), put("a", "3")];
        let entries: Vec<(LogIndex, Option<&Command>)> =
            commands.iter().enumerate().map(|(i, c)| (LogIndex(i as u64 + 1), Some(c))).collect();
        let outcomes = state.apply(&entries, &[]).unwrap();
        let revisions: Vec<i64> = outcomes
            .iter()
            .map(|o| match o {
                Some(Ok(Response::Put(p))) => p.header.as_ref().unwrap().revision,
                other => panic!("unexpected outcome {other:?}"),
            })
            .collect();
        assert_eq!(revisions, [2, 3, 4]);
        state.apply(&[(LogIndex(4), None)], &[]).unwrap();
        assert_eq!(get(&state, "a"), Some((b"3".to_vec(), 4)));
        assert_eq!(state.checkpoint().unwrap(), LogIndex(4));
    }
    let state = StateStore::open(&path, GroupId::FIRST).unwrap();
    assert_eq!(state.applied_index(), LogIndex(4));
    assert_eq!(state.current_revision().unwrap(), 4);
    assert_eq!(get(&state, "a"), Some((b"3".to_vec(), 4)));
    assert_eq!(get(&state, "b"), Some((b"2".to_vec(), 3)));
    state.verify().unwrap();
}

/// Flips one byte inside every copy of `needle` in the file at `path`.
fn damage(path: &std::path::Path, needle: &[u8]) -> usize {
    let mut bytes = std::fs::read(path).unwrap();
    let mut hits = 0;
    let mut i = 0;
    while i + needle.len() <= bytes.len() {
        if &bytes[i..i + needle.len()] == needle {
            bytes[i + needle.len() / 2] ^= 0x20;
            hits += 1;
            i += needle.len();
        } else {
            i += 1;
        }
    }
    std::fs::write(path, bytes).unwrap();
    hits
}

/// A value damaged on disk is refused when the state is opened: never served.
#[test]
fn damaged_state_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let value = "a-value-that-appears-nowhere-else-0123456789";
    {
        let state = StateStore::open(&path, GroupId::FIRST).unwrap();
        let command = put("k", value);
        state.apply(&[(LogIndex(1), Some(&command))], &[]).unwrap();
        state.checkpoint().unwrap();
    }
    assert!(damage(&path, value.as_bytes()) > 0, "value not found in the file");
    let error = StateStore::open(&path, GroupId::FIRST).err().expect("damaged file must not open");
    assert!(error.is_corruption(), "expected a corruption error, got: {error}");
}

/// A log entry damaged on disk is refused when the log is opened or read.
#[test]
fn damaged_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let payload = b"an-entry-that-appears-nowhere-else-9876543210";
    let segment = {
        let log = LogStore::open(&path).unwrap();
        log.append(GroupId::FIRST, &[(LogIndex(1), payload.as_slice())], None).unwrap();
        log.segments()[0].clone()
    };
    assert!(damage(&segment, payload) > 0, "entry not found in the file");
    let outcome: Result<(), StorageError> = LogStore::open(&path)
        .and_then(|log| log.entries(GroupId::FIRST, LogIndex(1)..LogIndex(11)).map(drop));
    let error = outcome.expect_err("damaged log must not be read");
    assert!(error.is_corruption(), "expected a corruption error, got: {error}");
}

fn apply_all(state: &StateStore, first: u64, commands: &[Command]) {
    let entries: Vec<(LogIndex, Option<&Command>)> =
        commands.iter().enumerate().map(|(i, c)| (LogIndex(first + i as u64), Some(c))).collect();
    state.apply(&entries, &[("raft/test", b"consensus")]).unwrap();
}

/// An exported state imported into another store reads the same, hashes the same, keeps
/// the consensus meta, and replaces what the other store had.
#[test]
fn export_then_import_reproduces_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let source = StateStore::open(&dir.path().join("a.redb"), GroupId::FIRST).unwrap();
    let commands: Vec<Command> = (0..50).map(|i| put(&format!("k{}", i % 20), &format!("v{i}"))).collect();
    apply_all(&source, 1, &commands);
    let compact = Command {
        op: Some(command::Op::Compaction(synod_api::etcdserverpb::CompactionRequest {
            revision: 30,
            physical: false,
        })),
        ..Default::default()
    };
    apply_all(&source, 51, &[compact]);
    let mut stream = Vec::new();
    let (exported, values) = source.export(&mut stream, &["raft/test", "absent"]).unwrap();
    assert_eq!(values, vec![Some(b"consensus".to_vec()), None]);
    assert!(exported.records >= 20);

    let target = StateStore::open(&dir.path().join("b.redb"), GroupId::FIRST).unwrap();
    apply_all(&target, 1, &[put("only-in-target", "x")]);
    assert_eq!(StateStore::check_snapshot(&mut stream.as_slice()).unwrap(), exported);
    let imported = target.import(&mut stream.as_slice()).unwrap();
    assert_eq!(imported, exported);
    assert_eq!(target.applied_index(), source.applied_index());
    assert_eq!(target.current_revision().unwrap(), source.current_revision().unwrap());
    assert_eq!(target.compact_revision().unwrap(), 30);
    assert_eq!(target.hash_kv(0).unwrap(), source.hash_kv(0).unwrap());
    assert_eq!(get(&target, "only-in-target"), None);
    assert_eq!(get(&target, "k7"), get(&source, "k7"));
    assert_eq!(target.meta_value("raft/test").unwrap().as_deref(), Some(&b"consensus"[..]));
    target.verify().unwrap();
    // The import is durable, in the state file itself.
    let hash = target.hash_kv(0).unwrap();
    drop(target);
    assert!(!dir.path().join("b.redb.new").exists(), "the import's new file was left behind");
    let target = StateStore::open(&dir.path().join("b.redb"), GroupId::FIRST).unwrap();
    assert_eq!(target.hash_kv(0).unwrap(), hash, "after a reopen");
    assert_eq!(target.applied_index(), source.applied_index());
}

/// The exported stream of a store holding "a" and "b" (`a.redb` in `dir`), and another
/// store (`b.redb`) holding only `key`, set to `value` at revision 2.
fn stream_and_target(dir: &std::path::Path, key: &str, value: &str) -> (Vec<u8>, StateStore) {
    let source = StateStore::open(&dir.join("a.redb"), GroupId::FIRST).unwrap();
    apply_all(&source, 1, &[put("a", "1"), put("b", "2")]);
    let mut stream = Vec::new();
    source.export(&mut stream, &[]).unwrap();
    let target = StateStore::open(&dir.join("b.redb"), GroupId::FIRST).unwrap();
    apply_all(&target, 1, &[put(key, value)]);
    (stream, target)
}

/// A damaged or cut snapshot stream is refused and leaves the state as it was.
#[test]
fn damaged_snapshot_stream_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (stream, target) = stream_and_target(dir.path(), "keep", "me");
    let mut flipped = stream.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 1;
    for bad in [&flipped[..], &stream[..stream.len() - 3], &b"not a snapshot at all"[..]] {
        StateStore::check_snapshot(&mut &bad[..]).expect_err("a check must refuse a bad stream");
        let error = target.import(&mut &bad[..]).expect_err("bad stream must be refused");
        assert!(error.is_corruption(), "{error}");
        assert_eq!(get(&target, "keep"), Some((b"me".to_vec(), 2)));
        assert!(!dir.path().join("b.redb.new").exists(), "a refused import left its file");
    }
    target.checkpoint().unwrap();
    drop(target);
    let target = StateStore::open(&dir.path().join("b.redb"), GroupId::FIRST).unwrap();
    assert_eq!(get(&target, "keep"), Some((b"me".to_vec(), 2)), "after a reopen");
}

/// HashKV depends on the records up to a revision, so it tells diverging members apart,
/// and it refuses compacted and future revisions as etcd does.
#[test]
fn hash_kv_follows_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let a = StateStore::open(&dir.path().join("a.redb"), GroupId::FIRST).unwrap();
    let b = StateStore::open(&dir.path().join("b.redb"), GroupId::FIRST).unwrap();
    apply_all(&a, 1, &[put("x", "1"), put("y", "2")]);
    apply_all(&b, 1, &[put("x", "1"), put("y", "3")]);
    assert_eq!(a.hash_kv(2).unwrap(), b.hash_kv(2).unwrap(), "same records up to revision 2");
    assert_ne!(a.hash_kv(3).unwrap(), b.hash_kv(3).unwrap(), "different values at revision 3");
    assert_eq!(a.hash_kv(0).unwrap().unwrap().2, 3);
    assert_eq!(a.hash_kv(4).unwrap(), Err(synod_api::EtcdError::FutureRev));
}

/// The bytes in use (Status's `dbSizeInUse`) follow the records as they are written,
/// compacted away and leased, and a reopen or an import, which count the records afresh,
/// arrive at the same number.
#[test]
fn bytes_in_use_follow_the_records() {
    use synod_api::etcdserverpb::{CompactionRequest, LeaseGrantRequest, LeaseRevokeRequest};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let value = "v".repeat(1000);
    let in_use = |state: &StateStore| state.stats().in_use_bytes;
    let (kept, exported) = {
        let state = StateStore::open(&path, GroupId::FIRST).unwrap();
        assert_eq!(in_use(&state), 0);
        let puts: Vec<Command> = (0..100).map(|i| put(&format!("k{}", i % 10), &value)).collect();
        apply_all(&state, 1, &puts);
        let written = in_use(&state);
        assert!(
            (100 * 1000..100 * 1100).contains(&written),
            "100 records of 1000-byte values count {written} bytes"
        );

        // Compacting at the last revision keeps one revision of each of the 10 keys.
        let compact = Command {
            op: Some(command::Op::Compaction(CompactionRequest { revision: 101, physical: false })),
            ..Default::default()
        };
        apply_all(&state, 101, &[compact]);
        assert_eq!(in_use(&state), written, "the compaction's records are deleted later");
        assert_eq!(state.reclaim(usize::MAX).unwrap(), 0);
        let compacted = in_use(&state);
        assert!(
            (10 * 1000..10 * 1100).contains(&compacted),
            "10 records left after compaction count {compacted} bytes"
        );

        let grant = Command {
            op: Some(command::Op::LeaseGrant(LeaseGrantRequest { id: 7, ttl: 60 })),
            ..Default::default()
        };
        apply_all(&state, 102, &[grant]);
        let leased = in_use(&state);
        assert!(leased > compacted, "a lease counts: {leased} after {compacted}");
        let revoke = Command {
            op: Some(command::Op::LeaseRevoke(LeaseRevokeRequest { id: 7 })),
            ..Default::default()
        };
        apply_all(&state, 103, &[revoke]);
        assert_eq!(in_use(&state), compacted, "a revoked lease counts no more");

        state.checkpoint().unwrap();
        assert!(state.stats().size_bytes >= compacted);
        let mut stream = Vec::new();
        state.export(&mut stream, &[]).unwrap();
        (compacted, stream)
    };
    let reopened = StateStore::open(&path, GroupId::FIRST).unwrap();
    assert_eq!(in_use(&reopened), kept, "a reopen counts the same bytes");
    let target = StateStore::open(&dir.path().join("b.redb"), GroupId::FIRST).unwrap();
    target.import(&mut exported.as_slice()).unwrap();
    assert_eq!(in_use(&target), kept, "an import counts the same bytes");
}

fn compact(revision: i64) -> Command {
    Command {
        op: Some(command::Op::Compaction(synod_api::etcdserverpb::CompactionRequest {
            revision,
            physical: false,
        })),
        ..Default::default()
    }
}

/// The readers of the records themselves (HashKV, a snapshot and an etcd-format snapshot by
/// their bytes' hashes, the records list, watch history from the compaction revision).
const DIRECT_READERS: usize = 5;

/// What reader `which` of [`DIRECT_READERS`] returns: the same whether a compaction's
/// records are deleted yet or not.
fn direct_read(state: &StateStore, which: usize) -> String {
    use std::hash::{Hash as _, Hasher as _};
    let hash = |bytes: &[u8]| {
        let mut hasher = std::hash::DefaultHasher::new();
        bytes.hash(&mut hasher);
        hasher.finish()
    };
    match which {
        0 => format!("{:?}", state.hash_kv(0).unwrap()),
        1 => {
            let mut stream = Vec::new();
            state.export(&mut stream, &["raft/test"]).unwrap();
            format!("{:x}", hash(&stream))
        }
        2 => {
            let dir = tempfile::tempdir().unwrap();
            let etcd_path = dir.path().join("etcd.db");
            let mut etcd_file = std::fs::File::create(&etcd_path).unwrap();
            state.write_etcd_snapshot(&mut etcd_file).unwrap();
            drop(etcd_file);
            format!("{:x}", hash(&std::fs::read(&etcd_path).unwrap()))
        }
        3 => format!("{} records", state.records().unwrap().len()),
        _ => match state.history(state.compact_revision().unwrap(), &|_| true, usize::MAX).unwrap() {
            synod_storage::History::Changes { changes, through } => {
                format!("{through}: {:?}", changes.iter().map(|(rev, _)| *rev).collect::<Vec<_>>())
            }
            synod_storage::History::Compacted(at) => format!("compacted at {at}"),
        },
    }
}

fn direct_reads(state: &StateStore) -> Vec<String> {
    (0..DIRECT_READERS).map(|which| direct_read(state, which)).collect()
}

/// A compaction drops history from the index at once and deletes its records later, a
/// batch at a time; until they are gone nothing that reads the file sees them, and a
/// restart part-way finds the rest again.
#[test]
fn compacted_records_are_deleted_later_and_never_seen() {
    let dir = tempfile::tempdir().unwrap();
    // 100 puts over 10 keys (revisions 2 to 101), then "k0" deleted (102): compacting at
    // 102 drops 90 older values, and k0's last value and tombstone, which sits at the
    // compaction revision itself, where watch history starts.
    let mut commands: Vec<Command> =
        (0..100).map(|i| put(&format!("k{}", i % 10), &format!("v{i}"))).collect();
    commands.push(Command {
        op: Some(command::Op::DeleteRange(synod_api::etcdserverpb::DeleteRangeRequest {
            key: "k0".into(),
            ..Default::default()
        })),
        ..Default::default()
    });
    // The same history, compacted and fully deleted, for comparison.
    let done = StateStore::open(&dir.path().join("done.redb"), GroupId::FIRST).unwrap();
    apply_all(&done, 1, &commands);
    apply_all(&done, 102, &[compact(102)]);
    assert_eq!(done.reclaim(usize::MAX).unwrap(), 0);
    let expected = direct_reads(&done);
    assert_eq!(expected[3], "9 records", "nine keys keep one value each");

    // Deleted part-way, then restarted: after 30 of the 92, and after 91, which leaves
    // k0's tombstone as the first record of its key.
    for first in [30, 91] {
        let path = dir.path().join(format!("state-{first}.redb"));
        {
            let state = StateStore::open(&path, GroupId::FIRST).unwrap();
            apply_all(&state, 1, &commands);
            apply_all(&state, 102, &[compact(102)]);
            assert_eq!(state.unreclaimed().unwrap(), 92);
            state.verify().unwrap();
            assert_eq!(direct_reads(&state), expected, "before any deletion");
            assert_eq!(state.reclaim(first).unwrap(), 92 - first);
            state.verify().unwrap();
            assert_eq!(direct_reads(&state), expected, "after {first} deleted");
            state.checkpoint().unwrap();
        }
        let state = StateStore::open(&path, GroupId::FIRST).unwrap();
        assert_eq!(state.unreclaimed().unwrap(), 92 - first, "a restart finds the records still to delete");
        state.verify().unwrap();
        assert_eq!(direct_reads(&state), expected, "after a restart with {first} deleted");
        assert_eq!(state.reclaim(usize::MAX).unwrap(), 0);
        state.verify().unwrap();
        assert_eq!(direct_reads(&state), expected, "all deleted");
        state.checkpoint().unwrap();
        drop(state);
        let state = StateStore::open(&path, GroupId::FIRST).unwrap();
        assert_eq!(state.unreclaimed().unwrap(), 0);
        assert_eq!(direct_reads(&state), expected);
    }
}

/// A compaction of more keys than one slice of its pass over the index leaves the rest to
/// later steps (`reclaim`, which the checkpointer calls), so that no apply holds every read
/// up for the whole pass. Every reader of the records finishes the pass first and sees
/// what it sees once the compaction is done, and a restart before the pass ends finds
/// every record to delete.
#[test]
fn readers_of_the_records_finish_a_compaction_pass_under_way() {
    let dir = tempfile::tempdir().unwrap();
    let keys = synod_base::limits::COMPACTION_PASS_KEYS + 2_000;
    let key = |i: usize| format!("k{i:06}");
    // Every key written, every second written again, and the last key (odd, beyond the
    // apply's slice) deleted: compacting at the newest revision drops the first value of
    // every second key, and the last key's value and its tombstone, which sits at the
    // compaction revision itself, where watch history starts.
    let last = keys - 1;
    let commands: Vec<Command> = (0..keys)
        .map(|i| put(&key(i), "a"))
        .chain((0..keys).step_by(2).map(|i| put(&key(i), "b")))
        .chain([Command {
            op: Some(command::Op::DeleteRange(synod_api::etcdserverpb::DeleteRangeRequest {
                key: key(last).into(),
                ..Default::default()
            })),
            ..Default::default()
        }])
        .collect();
    assert!(last % 2 == 1, "the last key is written once");
    let dropped = keys.div_ceil(2) + 2;
    let newest = 1 + commands.len() as i64;
    let compacted = |name: &str| {
        let state = StateStore::open(&dir.path().join(name), GroupId::FIRST).unwrap();
        apply_all(&state, 1, &commands);
        apply_all(&state, commands.len() as u64 + 1, &[compact(newest)]);
        assert!(state.compacting().unwrap(), "{name}: a compaction under way");
        assert!(state.unreclaimed().unwrap() < dropped, "{name}: its pass over the index is unfinished");
        state
    };
    let done = compacted("done.redb");
    while done.compacting().unwrap() {
        done.reclaim(1000).unwrap();
    }
    assert_eq!(done.unreclaimed().unwrap(), 0);
    let expected = direct_reads(&done);
    assert_eq!(expected[3], format!("{last} records"));
    for (which, expected) in expected.iter().enumerate() {
        let state = compacted(&format!("reader-{which}.redb"));
        assert_eq!(&direct_read(&state, which), expected, "reader {which} during the pass");
        assert_eq!(state.unreclaimed().unwrap(), dropped, "reader {which} finished the pass");
    }

    let path = dir.path().join("restarted.redb");
    let state = compacted("restarted.redb");
    state.checkpoint().unwrap();
    drop(state);
    let state = StateStore::open(&path, GroupId::FIRST).unwrap();
    assert_eq!(state.unreclaimed().unwrap(), dropped, "a restart finds every record to delete");
    assert_eq!(direct_reads(&state), direct_reads(&done));
}

/// A defragment copies the state into a new file that replaces the old (and an import of
/// the same state builds the same): the file shrinks
/// to what the records need, everything reads the same before and after and after a
/// reopen, a view taken before it still exports the state it showed, and a copy a crash
/// left unfinished is removed at the next open.
#[test]
fn defragment_copies_into_a_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let value = "x".repeat(200);
    // 25,000 puts over 100 keys (more than two of the copy's batches), then compacted to
    // the newest revision and deleted: 100 values left of 25,000.
    let commands: Vec<Command> = (0..25_000).map(|i| put(&format!("k{:03}", i % 100), &value)).collect();
    let state = StateStore::open(&path, GroupId::FIRST).unwrap();
    for (chunk, commands) in commands.chunks(1000).enumerate() {
        apply_all(&state, 1 + chunk as u64 * 1000, commands);
    }
    // An import of the 25,000 records (three of its batches) reads the same as its source.
    let imported = StateStore::open(&dir.path().join("imported.redb"), GroupId::FIRST).unwrap();
    let mut stream = Vec::new();
    state.export(&mut stream, &[]).unwrap();
    assert_eq!(imported.import(&mut stream.as_slice()).unwrap().records, 25_000);
    assert_eq!(direct_reads(&imported), direct_reads(&state), "after an import");
    drop(imported);
    apply_all(&state, 25_001, &[compact(25_001)]);
    assert_eq!(state.reclaim(usize::MAX).unwrap(), 0);
    state.checkpoint().unwrap();
    let before = state.stats().size_bytes;
    let expected = direct_reads(&state);
    let view = state.view().unwrap();
    let mut viewed = Vec::new();
    view.export(&mut viewed).unwrap();

    state.defragment(std::time::Duration::from_secs(10)).unwrap();
    let after = state.stats().size_bytes;
    assert!(after * 4 < before, "the file is {after} bytes after a defragment, {before} before");
    assert_eq!(direct_reads(&state), expected, "after the defragment");
    let mut again = Vec::new();
    view.export(&mut again).unwrap();
    assert!(again == viewed, "a view taken before the defragment exports something else");
    drop(view);
    assert!(!dir.path().join("state.redb.new").exists(), "the copy was left behind");

    // It keeps working on the new file, and the new file is what a reopen finds.
    apply_all(&state, 25_002, &[put("after", "defrag")]);
    state.checkpoint().unwrap();
    let now = direct_reads(&state);
    drop(state);
    std::fs::write(dir.path().join("state.redb.new"), b"a copy a crash interrupted").unwrap();
    let state = StateStore::open(&path, GroupId::FIRST).unwrap();
    assert_eq!(direct_reads(&state), now, "after a reopen");
    assert_eq!(get(&state, "after").map(|(v, _)| v), Some(b"defrag".to_vec()));
    assert!(!dir.path().join("state.redb.new").exists(), "an unfinished copy survives a reopen");
}

/// A received state is built beside the current one, which serves reads until the install;
/// one that is never installed (a transfer the leader retried) leaves nothing behind, and
/// neither does one a crash interrupted.
#[test]
fn a_prepared_state_is_installed_or_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (stream, target) = stream_and_target(dir.path(), "c", "3");
    let incoming = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("b.redb.incoming-"))
            .count()
    };
    let (first, summary) = target.prepare_import(&mut stream.as_slice()).unwrap();
    assert_eq!(summary.records, 2);
    let (second, _) = target.prepare_import(&mut stream.as_slice()).unwrap();
    assert_eq!(incoming(), 2);
    assert_eq!(get(&target, "c"), Some((b"3".to_vec(), 2)), "the state changed before the install");
    drop(first);
    assert_eq!(incoming(), 1, "a dropped preparation left its file");
    target.install(second).unwrap();
    assert_eq!(incoming(), 0);
    assert_eq!(get(&target, "c"), None);
    assert_eq!(get(&target, "a"), Some((b"1".to_vec(), 2)));
    target.checkpoint().unwrap();
    drop(target);
    std::fs::write(dir.path().join("b.redb.incoming-1-1"), b"a transfer a crash interrupted").unwrap();
    let target = StateStore::open(&dir.path().join("b.redb"), GroupId::FIRST).unwrap();
    assert_eq!(incoming(), 0, "an interrupted preparation survived a reopen");
    assert_eq!(get(&target, "a"), Some((b"1".to_vec(), 2)), "the installed state after a reopen");
}

/// A snapshot stream that stops at its first read until the test lets it go, and says when
/// it got there.
struct Gate<'a> {
    bytes: &'a [u8],
    reached: Option<std::sync::mpsc::Sender<()>>,
    open: std::sync::mpsc::Receiver<()>,
}

impl std::io::Read for Gate<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if let Some(reached) = self.reached.take() {
            reached.send(()).unwrap();
            self.open.recv().unwrap();
        }
        self.bytes.read(out)
    }
}

/// An import (a follower installing a snapshot) builds the new state beside the old one,
/// which serves every read until the swap: admission, headers and the checkpointer ask
/// for the revision, auth and compaction on every request, and a member whose runtime
/// threads waited seconds on the index's lock stopped answering its peers (an import of
/// 1,000,000 keys took 22 s, the leader's transfer timed out and began again, three
/// times). A defragment takes the same path.
#[test]
fn reads_go_on_while_an_import_builds_the_new_state() {
    let dir = tempfile::tempdir().unwrap();
    let (stream, target) = stream_and_target(dir.path(), "c", "3");
    let (reached_tx, reached) = std::sync::mpsc::channel();
    let (open, open_rx) = std::sync::mpsc::channel();
    let (target, stream) = (&target, &stream);
    std::thread::scope(|scope| {
        let importing = scope.spawn(move || {
            let mut gate = Gate { bytes: stream, reached: Some(reached_tx), open: open_rx };
            target.import(&mut gate)
        });
        reached.recv_timeout(std::time::Duration::from_secs(10)).expect("the import reads its stream");
        let (answer, answered) = std::sync::mpsc::channel();
        scope.spawn(move || {
            let published = (
                target.current_revision().unwrap(),
                target.auth_enabled().unwrap(),
                target.compact_revision().unwrap(),
                target.unreclaimed().unwrap(),
            );
            let indexed = (
                get(target, "c"),
                get(target, "a"),
                target.leases().unwrap().len(),
                target.lease(1).unwrap().is_none(),
                target.lease_generation().is_ok(),
                target.alarms().unwrap().len(),
                target.auth(|auth| auth.enabled()).unwrap(),
                target.counter_session_count().unwrap(),
            );
            let mut exported = Vec::new();
            target.export(&mut exported, &[]).unwrap();
            answer.send((published, indexed, !exported.is_empty())).ok();
        });
        let read = answered.recv_timeout(std::time::Duration::from_secs(10));
        open.send(()).unwrap();
        let (published, indexed, exported) = read.expect("the old state is read while the import runs");
        assert_eq!(published, (2, false, -1, 0));
        assert_eq!(indexed, (Some((b"3".to_vec(), 2)), None, 0, true, true, 0, false, 0));
        assert!(exported);
        importing.join().unwrap().unwrap();
    });
    assert_eq!(target.current_revision().unwrap(), 3, "the imported revision is published");
    assert_eq!(get(target, "c"), None);
    assert_eq!(get(target, "a"), Some((b"1".to_vec(), 2)));
}
