//! Fuzzes the JSON gateway's request decoding: the first byte picks a gateway route, the
//! rest is its body, decoded as synod-server's gateway does (`synod_fuzz::gateway`, with
//! synod-api's pbjson impls). A request that decodes must also decode the same way with
//! `serde_json::from_slice` straight into the type (when no `null` is in the way, which the
//! gateway drops first), survive a JSON and a protobuf round trip, and, for the key-value
//! routes, be served on one member's `KvStore` like a gRPC request (`synod_fuzz::kv`).
//!
//! The gateway's handlers past decoding (`api.admit`, the `Api` methods) need a started
//! member with consensus behind it, so they are not driven from here.

#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use synod_api::etcdserverpb::{
    AlarmRequest, CompactionRequest, DeleteRangeRequest, HashKvRequest, LeaseGrantRequest,
    LeaseKeepAliveRequest, LeaseLeasesRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest, MemberAddRequest,
    MemberPromoteRequest, MemberRemoveRequest, MemberUpdateRequest, MoveLeaderRequest, PutRequest,
    RangeRequest, StatusRequest, TxnRequest, WatchRequest,
};
use synod_api::synod::v1::{AddRequest, GetRequest};
use synod_api::synodpb::command;
use synod_api::v3electionpb::{CampaignRequest, LeaderRequest, ProclaimRequest, ResignRequest};
use synod_api::v3lockpb::{LockRequest, UnlockRequest};
use synod_fuzz::kinds::gateway_json as kind;
use synod_fuzz::kv::{self, Member};
use synod_fuzz::{gateway, round_trip};

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    match first % kind::COUNT {
        kind::RANGE => {
            if let Some(request) = unary::<RangeRequest>(body) {
                let _ = Member::with_history().range(&request);
            }
        }
        kind::PUT => {
            if let Some(request) = unary::<PutRequest>(body) {
                serve(|member| drop(member.put(request)));
            }
        }
        kind::DELETE_RANGE => {
            if let Some(request) = unary::<DeleteRangeRequest>(body) {
                serve(|member| drop(member.delete_range(request)));
            }
        }
        kind::TXN => {
            if let Some(request) = unary::<TxnRequest>(body) {
                serve(|member| drop(member.txn(request)));
            }
        }
        kind::COMPACTION => {
            if let Some(request) = unary::<CompactionRequest>(body) {
                serve(|member| drop(member.apply(&kv::command(command::Op::Compaction(request)))));
            }
        }
        kind::LEASE_GRANT => {
            if let Some(request) = unary::<LeaseGrantRequest>(body) {
                serve(|member| drop(member.apply(&kv::command(command::Op::LeaseGrant(request)))));
            }
        }
        kind::LEASE_REVOKE => {
            if let Some(request) = unary::<LeaseRevokeRequest>(body) {
                serve(|member| drop(member.apply(&kv::command(command::Op::LeaseRevoke(request)))));
            }
        }
        kind::ALARM => {
            if let Some(request) = unary::<AlarmRequest>(body) {
                serve(|member| drop(member.apply(&kv::command(command::Op::Alarm(request)))));
            }
        }
        kind::LEASE_TIME_TO_LIVE => drop(unary::<LeaseTimeToLiveRequest>(body)),
        kind::LEASE_LEASES => drop(unary::<LeaseLeasesRequest>(body)),
        kind::WATCH => stream::<WatchRequest>(body),
        kind::LEASE_KEEP_ALIVE => stream::<LeaseKeepAliveRequest>(body),
        kind::OBSERVE => stream::<LeaderRequest>(body),
        kind::STATUS => drop(unary::<StatusRequest>(body)),
        kind::HASH_KV => drop(unary::<HashKvRequest>(body)),
        kind::MOVE_LEADER => drop(unary::<MoveLeaderRequest>(body)),
        kind::MEMBER_ADD => drop(unary::<MemberAddRequest>(body)),
        kind::MEMBER_REMOVE => drop(unary::<MemberRemoveRequest>(body)),
        kind::MEMBER_UPDATE => drop(unary::<MemberUpdateRequest>(body)),
        kind::MEMBER_PROMOTE => drop(unary::<MemberPromoteRequest>(body)),
        kind::LOCK => drop(unary::<LockRequest>(body)),
        kind::UNLOCK => drop(unary::<UnlockRequest>(body)),
        kind::CAMPAIGN => drop(unary::<CampaignRequest>(body)),
        kind::PROCLAIM => drop(unary::<ProclaimRequest>(body)),
        kind::LEADER => drop(unary::<LeaderRequest>(body)),
        kind::RESIGN => drop(unary::<ResignRequest>(body)),
        kind::COUNTER_ADD => drop(unary::<AddRequest>(body)),
        kind::COUNTER_GET => drop(unary::<GetRequest>(body)),
        _ => unreachable!("kinds are taken modulo kind::COUNT"),
    }
});

/// Serves one write on a member with history, then restarts it.
fn serve(write: impl FnOnce(&mut Member)) {
    let mut member = Member::with_history();
    write(&mut member);
    member.check_restart();
}

trait Request: DeserializeOwned + Serialize + Default + PartialEq + Debug + prost::Message {}
impl<T: DeserializeOwned + Serialize + Default + PartialEq + Debug + prost::Message> Request for T {}

/// A unary route's body, decoded as the gateway decodes it.
fn unary<Req: Request>(body: &[u8]) -> Option<Req> {
    let request = gateway::unary::<Req>(body).ok()?;
    decoded(&request, body);
    Some(request)
}

/// A streaming route's body, decoded as the gateway decodes it.
fn stream<Req: Request>(body: &[u8]) {
    if let Ok(requests) = gateway::stream::<Req>(body) {
        for request in &requests {
            round_trip::json(request);
            proto_round_trip(request);
        }
    }
}

/// What holds of every request the gateway decoded.
fn decoded<Req: Request>(request: &Req, body: &[u8]) {
    let has_null = body.windows(4).any(|w| w == b"null");
    if !has_null
        && !body.iter().all(u8::is_ascii_whitespace)
        && let Ok(direct) = serde_json::from_slice::<Req>(body)
    {
        assert_eq!(&direct, request, "from_slice and the gateway's decoding disagree");
    }
    round_trip::json(request);
    proto_round_trip(request);
}

/// A request from JSON goes on as protobuf (a Command in the log, a forwarded call).
fn proto_round_trip<Req: Request>(request: &Req) {
    let again = Req::decode(request.encode_to_vec().as_slice()).expect("a message synod encoded decodes");
    assert_eq!(&again, request, "a request from JSON changed through protobuf");
}
