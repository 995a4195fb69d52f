//! Fuzzes what members store and exchange (`synodpb`, `crates/synod-api/proto/synodpb/
//! raft.proto`): arbitrary bytes decoded with synod-api's prost types and round-tripped;
//! the commands a decoded log entry, AppendEntries or Forward carries are applied to one
//! member's `KvStore` as a follower would apply them (see `synod_fuzz::kv`), and error
//! texts a peer sends back are read as `EtcdError`s.
//!
//! synod-consensus's own decoders (`codec::entry_from`, `append_request_from` with
//! `check_append`, `vote_request_from`, `snapshot_meta_from` with `check_snapshot_meta`,
//! `decode_vote`, `decode_membership`, `decode_log_id`) run on the same bytes through
//! `synod_consensus::fuzzing`, which keeps openraft's types inside the crate. A `Command`
//! passes through `entry_from` unchanged, so applying it is what a member does with an
//! entry that decoded.

#![no_main]

use libfuzzer_sys::fuzz_target;
use synod_api::EtcdError;
use synod_api::synodpb::{
    AppendEntriesRequest, AppendEntriesResponse, ClusterInfoResponse, Command, Entry, ForwardRequest,
    ForwardResponse, Identity, LeaderCallRequest, LeaderCallResponse, LogId, MemberChangeRequest, Membership,
    ReadIndexResponse, RemovedMembers, SnapshotChunk, SnapshotMeta, StoredMembership, TransferLeaderRequest,
    TransferLeaderResponse, Vote, VoteRequest, VoteResponse, apply_result, entry,
};
use synod_fuzz::kinds::log_decode as kind;
use synod_fuzz::kv::Member;
use synod_fuzz::{frames, round_trip};

fuzz_target!(|data: &[u8]| {
    // The store is made only when a frame carries a command: most inputs decode messages
    // without one, and making it is most of a run's cost.
    let mut member: Option<Member> = None;
    for frame in frames::split(data) {
        for command in decode(frame.kind % kind::COUNT, frame.payload) {
            let _ = member.get_or_insert_with(Member::with_history).apply(&command);
        }
    }
    if let Some(member) = member {
        member.check_restart();
    }
});

/// Decodes one message; returns the commands it carries to a state machine.
fn decode(kind: u8, bytes: &[u8]) -> Vec<Command> {
    consensus_decoders(kind, bytes);
    match kind {
        kind::ENTRY => round_trip::proto::<Entry>(bytes).into_iter().filter_map(entry_command).collect(),
        kind::APPEND_REQUEST => round_trip::proto::<AppendEntriesRequest>(bytes)
            .map(|request| request.entries.into_iter().filter_map(entry_command).collect())
            .unwrap_or_default(),
        kind::FORWARD_REQUEST => {
            round_trip::proto::<ForwardRequest>(bytes).map(|request| request.commands).unwrap_or_default()
        }
        kind::FORWARD_RESPONSE => {
            if let Some(response) = round_trip::proto::<ForwardResponse>(bytes) {
                for outcome in &response.outcomes {
                    etcd_error_text(&outcome.error);
                    if let Some(apply_result::Result::Error(text)) =
                        outcome.result.as_ref().and_then(|r| r.result.as_ref())
                    {
                        etcd_error_text(text);
                    }
                }
            }
            Vec::new()
        }
        kind::READ_INDEX_RESPONSE => {
            if let Some(response) = round_trip::proto::<ReadIndexResponse>(bytes) {
                etcd_error_text(&response.error);
            }
            Vec::new()
        }
        kind::APPEND_RESPONSE => skip(round_trip::proto::<AppendEntriesResponse>(bytes)),
        kind::VOTE_REQUEST => skip(round_trip::proto::<VoteRequest>(bytes)),
        kind::VOTE_RESPONSE => skip(round_trip::proto::<VoteResponse>(bytes)),
        kind::VOTE => skip(round_trip::proto::<Vote>(bytes)),
        kind::LOG_ID => skip(round_trip::proto::<LogId>(bytes)),
        kind::MEMBERSHIP => skip(round_trip::proto::<Membership>(bytes)),
        kind::STORED_MEMBERSHIP => skip(round_trip::proto::<StoredMembership>(bytes)),
        kind::SNAPSHOT_META => skip(round_trip::proto::<SnapshotMeta>(bytes)),
        kind::SNAPSHOT_CHUNK => skip(round_trip::proto::<SnapshotChunk>(bytes)),
        kind::TRANSFER_REQUEST => skip(round_trip::proto::<TransferLeaderRequest>(bytes)),
        kind::TRANSFER_RESPONSE => skip(round_trip::proto::<TransferLeaderResponse>(bytes)),
        kind::MEMBER_CHANGE_REQUEST => skip(round_trip::proto::<MemberChangeRequest>(bytes)),
        kind::CLUSTER_INFO_RESPONSE => skip(round_trip::proto::<ClusterInfoResponse>(bytes)),
        kind::LEADER_CALL_REQUEST => skip(round_trip::proto::<LeaderCallRequest>(bytes)),
        kind::LEADER_CALL_RESPONSE => skip(round_trip::proto::<LeaderCallResponse>(bytes)),
        kind::IDENTITY => skip(round_trip::proto::<Identity>(bytes)),
        kind::REMOVED_MEMBERS => skip(round_trip::proto::<RemovedMembers>(bytes)),
        _ => unreachable!("kinds are taken modulo kind::COUNT"),
    }
}

/// A message that carries no command.
fn skip<M>(_: Option<M>) -> Vec<Command> {
    Vec::new()
}

fn entry_command(entry: Entry) -> Option<Command> {
    match entry.payload? {
        entry::Payload::Command(command) => Some(command),
        entry::Payload::Blank(_) | entry::Payload::Membership(_) => None,
    }
}

/// An error text from a peer, read as the follower reads it: a known text is that error.
fn etcd_error_text(text: &str) {
    if let Some(error) = EtcdError::from_message(text) {
        assert_eq!(error.message(), text, "from_message matched a different text");
    }
}

/// The member's own decoders and checks of what it stores and receives; they must refuse
/// what they do not take, never panic.
fn consensus_decoders(kind: u8, bytes: &[u8]) {
    use synod_consensus::fuzzing;
    match kind {
        kind::ENTRY => {
            let _ = fuzzing::log_entry(bytes);
        }
        kind::APPEND_REQUEST => {
            let _ = fuzzing::append_entries(bytes);
        }
        kind::VOTE_REQUEST => {
            let _ = fuzzing::vote_request(bytes);
        }
        kind::VOTE | kind::LOG_ID | kind::MEMBERSHIP | kind::STORED_MEMBERSHIP => {
            let _ = fuzzing::stored_meta(bytes);
        }
        kind::SNAPSHOT_META => {
            // The first byte says how many of the rest are the vote it came with.
            let (split, rest) = bytes.split_first().map_or((0, bytes), |(n, rest)| (*n as usize, rest));
            let (vote, meta) = rest.split_at(split.min(rest.len()));
            let _ = fuzzing::snapshot_meta(vote, meta);
        }
        _ => {}
    }
}
