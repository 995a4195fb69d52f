//! Power cuts on a simulated disk that drops unsynced writes: the only way to check that
//! what synod acknowledges was really synced.

use synod_api::etcdserverpb::{PutRequest, RangeRequest};
use synod_api::synodpb::{Command, command};
use synod_base::{GroupId, LogIndex};
use synod_storage::sim_disk::{SimDir, SimDisk};
use synod_storage::{LogStore, StateStore};

fn put(i: u64) -> Command {
    Command {
        op: Some(command::Op::Put(PutRequest {
            key: format!("k{i:03}").into_bytes(),
            value: format!("v{i}").into_bytes(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn exists(state: &StateStore, i: u64) -> bool {
    let request = RangeRequest { key: format!("k{i:03}").into_bytes(), ..Default::default() };
    !state.range(&request).expect("range").expect("valid request").kvs.is_empty()
}

/// After a power cut, every log entry whose append returned is on disk, and the state
/// holds exactly what its last checkpoint made durable, records and applied index
/// together, so the log can replay the rest.
#[test]
fn power_cut_keeps_appended_entries_and_checkpointed_state() {
    let (log_disk, state_disk) = (SimDir::new(), SimDisk::new());
    {
        let log = LogStore::open_on(log_disk.clone(), "log").expect("open log");
        let state = StateStore::open_on(state_disk.clone(), "state", GroupId::FIRST).expect("open state");
        for i in 1..=20u64 {
            let command = put(i);
            let bytes = prost::Message::encode_to_vec(&command);
            let syncs = log_disk.syncs();
            log.append(GroupId::FIRST, &[(LogIndex(i), bytes.as_slice())], None).expect("append");
            assert!(log_disk.syncs() > syncs, "append {i} returned without syncing the log");
            state.apply(&[(LogIndex(i), Some(&command))], &[]).expect("apply");
            if i == 12 {
                assert_eq!(state.checkpoint().expect("checkpoint"), LogIndex(12));
            }
        }
        assert!(exists(&state, 20), "applied entries are readable before they are durable");
        log_disk.power_cut(None);
        state_disk.power_cut();
    }
    log_disk.power_on();
    state_disk.power_on();

    let log = LogStore::open_on(log_disk, "log").expect("reopen log");
    assert_eq!(log.bounds(GroupId::FIRST).expect("bounds"), Some((LogIndex(1), LogIndex(20))));
    let state = StateStore::open_on(state_disk, "state", GroupId::FIRST).expect("reopen state");
    assert_eq!(state.applied_index(), LogIndex(12), "the state rolls back to its checkpoint");
    assert_eq!(state.current_revision().expect("revision"), 13);
    assert!(exists(&state, 12) && !exists(&state, 13));
    state.verify().expect("records and index agree");

    // Replaying the log from the durable applied index restores everything.
    let entries = log.entries(GroupId::FIRST, LogIndex(13)..LogIndex(113)).expect("read log");
    let commands: Vec<(LogIndex, Command)> = entries
        .iter()
        .map(|(i, bytes)| (*i, <Command as prost::Message>::decode(bytes.as_slice()).expect("decode")))
        .collect();
    let replay: Vec<(LogIndex, Option<&Command>)> = commands.iter().map(|(i, c)| (*i, Some(c))).collect();
    state.apply(&replay, &[]).expect("replay");
    assert!(exists(&state, 20));
    assert_eq!(state.current_revision().expect("revision"), 21);
}
