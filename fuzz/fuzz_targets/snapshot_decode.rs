//! Fuzzes synod's snapshot readers. The first byte picks what the rest is:
//! - a state snapshot stream as a member receives one from its leader: checked frame by
//!   frame with `StateStore::check_snapshot` (which opens every record's checksummed
//!   frame, `record::open`), then, as the peer service and the state machine do, imported
//!   into a state store;
//! - the same stream built from a description with its checksums filled in
//!   (`synod_fuzz::state_stream`), so that what lies behind the checksums gets fuzzed;
//! - an etcd snapshot file (a bbolt database) as `synodctl snapshot restore` reads it:
//!   `etcd_snapshot::is_bbolt` and `etcd_snapshot::read` on the bytes written to a temp
//!   file, then `StateStore::restore_records` into an empty store.
//!
//! A store that took a snapshot must then verify, export a stream that passes the check
//! and imports back to the same stream, and apply the next log entry; a restored etcd
//! snapshot must also write back (Maintenance.Snapshot) to a file that reads as the same
//! records and leases.
//!
//! `record::open` itself is private to synod-storage; it is reached through the stream
//! check and the import, which open every record and meta value with it.

#![no_main]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

use libfuzzer_sys::fuzz_target;
use synod_api::etcdserverpb::PutRequest;
use synod_api::synodpb::{LeaseRecord, command};
use synod_base::{GroupId, LogIndex};
use synod_fuzz::kinds::snapshot_decode as kind;
use synod_fuzz::{frames, kv, state_stream};
use synod_storage::StateStore;
use synod_storage::etcd_snapshot::{self, EtcdSnapshot};

thread_local! {
    /// Two scratch files, reused: creating files would be most of a run's cost.
    static FILES: RefCell<(File, File)> = RefCell::new((
        tempfile::tempfile().expect("create a scratch file"),
        tempfile::tempfile().expect("create a scratch file"),
    ));
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    match first % kind::COUNT {
        kind::STATE_STREAM => state_stream(rest),
        kind::STATE_FRAMES => state_stream(&state_stream::build(&frames::split(rest))),
        kind::ETCD_BBOLT => etcd_bbolt(rest),
        _ => unreachable!("kinds are taken modulo kind::COUNT"),
    }
});

fn empty_store() -> StateStore {
    StateStore::open_on(redb::backends::InMemoryBackend::new(), "fuzz", GroupId(1))
        .expect("an in-memory state store opens")
}

/// A stream a member received: checked, then imported if the check passed.
fn state_stream(stream: &[u8]) {
    let Ok(checked) = StateStore::check_snapshot(&mut &stream[..]) else {
        return;
    };
    let store = empty_store();
    // The check reads frames, not meaning: a stream can pass it with records that do not
    // fit together or meta values of the wrong size, and the import's rebuild of the key
    // index refuses those. That is an error, not a panic.
    let Ok(imported) = store.import(&mut &stream[..]) else {
        return;
    };
    assert_eq!(imported, checked, "the import read other frames than the check");
    check_store(&store);
}

/// An etcd snapshot file, restored into an empty store as `synodctl snapshot restore` does.
fn etcd_bbolt(bytes: &[u8]) {
    let snapshot = FILES.with_borrow_mut(|(file, _)| {
        file.set_len(0).expect("truncate the scratch file");
        file.write_all_at(bytes, 0).expect("write the scratch file");
        let _ = etcd_snapshot::is_bbolt(file);
        etcd_snapshot::read(file, bytes.len() as u64)
    });
    let Ok(snapshot) = snapshot else {
        return;
    };
    let store = empty_store();
    let mut records = snapshot.records.iter().cloned().map(Ok);
    let restored =
        store.restore_records(&mut records, &snapshot.leases, snapshot.revision, snapshot.compact_revision);
    if restored.is_err() {
        // Records that do not fit together (a key's versions out of order, say).
        return;
    }
    written_back(&store, &snapshot);
    check_store(&store);
}

/// What a store that took a snapshot must do next. It ends by applying an entry, so it
/// comes last.
fn check_store(store: &StateStore) {
    if let Err(e) = store.verify() {
        panic!("a store that took a snapshot does not verify: {e}");
    }
    let exported = export(store);
    if let Err(e) = StateStore::check_snapshot(&mut exported.as_slice()) {
        panic!("a stream synod exported fails the check: {e}");
    }
    let again = empty_store();
    if let Err(e) = again.import(&mut exported.as_slice()) {
        panic!("a stream synod exported does not import: {e}");
    }
    assert!(export(&again) == exported, "export, import, export changed the stream");

    // The member goes on applying the log after the snapshot.
    let next = store.applied().map_or(Some(1), |applied| applied.0.checked_add(1));
    if let Some(next) = next {
        let put = kv::command(command::Op::Put(PutRequest {
            key: b"after-snapshot".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        }));
        if let Err(e) = store.apply(&[(LogIndex(next), Some(&put))], &[]) {
            panic!("the entry after a snapshot does not apply: {e}");
        }
    }
}

fn export(store: &StateStore) -> Vec<u8> {
    let mut out = Vec::new();
    if let Err(e) = store.export(&mut out, &[]) {
        panic!("a store that took a snapshot does not export: {e}");
    }
    out
}

/// The store written as an etcd snapshot reads back as what was restored into it.
fn written_back(store: &StateStore, restored: &EtcdSnapshot) {
    let again = FILES.with_borrow_mut(|(_, file)| {
        let (_, written) = match store.write_etcd_snapshot(file) {
            Ok(written) => written,
            Err(e) => panic!("a restored store does not write an etcd snapshot: {e}"),
        };
        etcd_snapshot::read(file, written)
    });
    let again = match again {
        Ok(again) => again,
        Err(e) => panic!("an etcd snapshot synod wrote does not read back: {e}"),
    };
    assert!(again.records == restored.records, "an etcd snapshot round trip changed the records");
    assert_eq!(again.compact_revision, restored.compact_revision, "the round trip changed the compaction");
    // A lease stored twice under different bucket keys is taken once, the later one.
    let by_id = |leases: &[LeaseRecord]| -> BTreeMap<i64, LeaseRecord> {
        leases.iter().map(|lease| (lease.id, *lease)).collect()
    };
    let (leases, leases_again) = (by_id(&restored.leases), by_id(&again.leases));
    assert_eq!(leases_again, leases, "an etcd snapshot round trip changed the leases");
}
