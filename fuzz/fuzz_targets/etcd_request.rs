//! Fuzzes etcd's gRPC requests as synod serves them: arbitrary bytes decoded with
//! synod-api's prost types, checked by synod-mvcc's request validation, and served on one
//! member's `KvStore` (see `synod_fuzz::kv`). An input is up to 16 frames (kind byte,
//! length, message; `synod_fuzz::frames`), served in order on one store, which then
//! restarts from its records and must come back the same.
//!
//! Requests synod serves outside synod-mvcc (Watch, lease keep-alive and TimeToLive,
//! Lock, Election, cluster calls) are decoded and round-tripped only: their handlers live
//! in synod-server and need a started member.

#![no_main]

use libfuzzer_sys::fuzz_target;
use synod_api::etcdserverpb::{
    AlarmRequest, CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, LeaseKeepAliveRequest,
    LeaseRevokeRequest, LeaseTimeToLiveRequest, MemberAddRequest, PutRequest, RangeRequest, TxnRequest,
    WatchRequest,
};
use synod_api::synodpb::{Command, command};
use synod_api::v3electionpb::CampaignRequest;
use synod_api::v3lockpb::LockRequest;
use synod_fuzz::kinds::etcd_request as kind;
use synod_fuzz::kv::{self, Member};
use synod_fuzz::{frames, round_trip};

/// The id the serving member picks for a grant that asks for none (the server draws a
/// random one; any fixed non-zero id takes the same path through the state machine).
const CHOSEN_LEASE_ID: i64 = 0x5eed;

fuzz_target!(|data: &[u8]| {
    let mut member = Member::with_history();
    for frame in frames::split(data) {
        serve(&mut member, frame.kind % kind::COUNT, frame.payload);
    }
    member.check_restart();
});

fn serve(member: &mut Member, kind: u8, bytes: &[u8]) {
    match kind {
        kind::RANGE => {
            if let Some(request) = round_trip::proto::<RangeRequest>(bytes) {
                let _ = member.range(&request);
            }
        }
        kind::PUT => {
            if let Some(request) = round_trip::proto::<PutRequest>(bytes) {
                let _ = member.put(request);
            }
        }
        kind::DELETE_RANGE => {
            if let Some(request) = round_trip::proto::<DeleteRangeRequest>(bytes) {
                let _ = member.delete_range(request);
            }
        }
        kind::TXN => {
            if let Some(request) = round_trip::proto::<TxnRequest>(bytes) {
                let _ = member.txn(request);
            }
        }
        kind::COMPACTION => {
            if let Some(request) = round_trip::proto::<CompactionRequest>(bytes) {
                let _ = member.apply(&kv::command(command::Op::Compaction(request)));
            }
        }
        kind::LEASE_GRANT => {
            if let Some(mut request) = round_trip::proto::<LeaseGrantRequest>(bytes) {
                if request.id == 0 {
                    request.id = CHOSEN_LEASE_ID;
                }
                let _ = member.apply(&kv::command(command::Op::LeaseGrant(request)));
            }
        }
        kind::LEASE_REVOKE => {
            if let Some(request) = round_trip::proto::<LeaseRevokeRequest>(bytes) {
                let _ = member.apply(&kv::command(command::Op::LeaseRevoke(request)));
            }
        }
        kind::COMMAND => {
            if let Some(command) = round_trip::proto::<Command>(bytes) {
                let _ = member.apply(&command);
            }
        }
        kind::ALARM => {
            if let Some(request) = round_trip::proto::<AlarmRequest>(bytes) {
                let _ = member.apply(&kv::command(command::Op::Alarm(request)));
            }
        }
        kind::WATCH => {
            round_trip::proto::<WatchRequest>(bytes);
        }
        kind::LEASE_KEEP_ALIVE => {
            round_trip::proto::<LeaseKeepAliveRequest>(bytes);
        }
        kind::LEASE_TIME_TO_LIVE => {
            round_trip::proto::<LeaseTimeToLiveRequest>(bytes);
        }
        kind::LOCK => {
            round_trip::proto::<LockRequest>(bytes);
        }
        kind::CAMPAIGN => {
            round_trip::proto::<CampaignRequest>(bytes);
        }
        kind::MEMBER_ADD => {
            round_trip::proto::<MemberAddRequest>(bytes);
        }
        _ => unreachable!("kinds are taken modulo kind::COUNT"),
    }
}
