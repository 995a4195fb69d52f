//! The `json` format: Go's `encoding/json` of etcd's generated response structs, which is
//! what etcdctl prints, not the proto3 JSON mapping (that one is the gateway's).
//!
//! The differences matter to scripts: numbers are JSON numbers even for 64-bit ids, bytes
//! are base64, zero values are left out (`omitempty`), field names are the Go struct tags
//! (`cluster_id`, `dbSize`, `peerURLs`, `ID`), a txn response wraps each result as
//! `{"Response":{"response_put":{...}}}`, and `<`, `>`, `&`, U+2028 and U+2029 are escaped
//! as Go escapes them. The structs below mirror etcd 3.5's generated Go structs.

use std::io;

use base64::Engine;
use serde::{Serialize, Serializer};
use synod_api::etcdserverpb::{
    DeleteRangeResponse, HashKvResponse, Member as PbMember, MemberListResponse, PutResponse, RangeResponse,
    ResponseHeader, StatusResponse as PbStatus, TxnResponse, response_op,
};
use synod_api::mvccpb::{Event as PbEvent, KeyValue as PbKeyValue};

use super::{EndpointHash, EndpointHealth, EndpointStatus, Reply};

fn is_zero<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

fn base64<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
}

#[derive(Serialize, Default)]
struct Header {
    #[serde(skip_serializing_if = "is_zero")]
    cluster_id: u64,
    #[serde(skip_serializing_if = "is_zero")]
    member_id: u64,
    #[serde(skip_serializing_if = "is_zero")]
    revision: i64,
    #[serde(skip_serializing_if = "is_zero")]
    raft_term: u64,
}

fn header(header: &Option<ResponseHeader>) -> Option<Header> {
    header.as_ref().map(|h| Header {
        cluster_id: h.cluster_id,
        member_id: h.member_id,
        revision: h.revision,
        raft_term: h.raft_term,
    })
}

#[derive(Serialize)]
struct KeyValue<'a> {
    #[serde(skip_serializing_if = "<[u8]>::is_empty", serialize_with = "base64")]
    key: &'a [u8],
    #[serde(skip_serializing_if = "is_zero")]
    create_revision: i64,
    #[serde(skip_serializing_if = "is_zero")]
    mod_revision: i64,
    #[serde(skip_serializing_if = "is_zero")]
    version: i64,
    #[serde(skip_serializing_if = "<[u8]>::is_empty", serialize_with = "base64")]
    value: &'a [u8],
    #[serde(skip_serializing_if = "is_zero")]
    lease: i64,
}

impl<'a> From<&'a PbKeyValue> for KeyValue<'a> {
    fn from(kv: &'a PbKeyValue) -> Self {
        KeyValue {
            key: &kv.key,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            value: &kv.value,
            lease: kv.lease,
        }
    }
}

#[derive(Serialize)]
struct Range<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    header: Option<Header>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    kvs: Vec<KeyValue<'a>>,
    #[serde(skip_serializing_if = "is_zero")]
    more: bool,
    #[serde(skip_serializing_if = "is_zero")]
    count: i64,
}

impl<'a> From<&'a RangeResponse> for Range<'a> {
    fn from(r: &'a RangeResponse) -> Self {
        Range {
            header: header(&r.header),
            kvs: r.kvs.iter().map(KeyValue::from).collect(),
            more: r.more,
            count: r.count,
        }
    }
}

#[derive(Serialize)]
struct Put<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    header: Option<Header>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_kv: Option<KeyValue<'a>>,
}

impl<'a> From<&'a PutResponse> for Put<'a> {
    fn from(r: &'a PutResponse) -> Self {
        Put { header: header(&r.header), prev_kv: r.prev_kv.as_ref().map(KeyValue::from) }
    }
}

#[derive(Serialize)]
struct Delete<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    header: Option<Header>,
    #[serde(skip_serializing_if = "is_zero")]
    deleted: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    prev_kvs: Vec<KeyValue<'a>>,
}

impl<'a> From<&'a DeleteRangeResponse> for Delete<'a> {
    fn from(r: &'a DeleteRangeResponse) -> Self {
        Delete {
            header: header(&r.header),
            deleted: r.deleted,
            prev_kvs: r.prev_kvs.iter().map(KeyValue::from).collect(),
        }
    }
}

#[derive(Serialize)]
struct Txn<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    header: Option<Header>,
    #[serde(skip_serializing_if = "is_zero")]
    succeeded: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    responses: Vec<ResponseOp<'a>>,
}

/// Go's `ResponseOp`: its oneof is an interface field named `Response` with no JSON tag,
/// holding a wrapper struct whose one field carries etcd 3.5's tag (`response_range`...).
#[derive(Serialize)]
struct ResponseOp<'a> {
    #[serde(rename = "Response")]
    response: Option<OneOf<'a>>,
}

#[derive(Serialize)]
enum OneOf<'a> {
    #[serde(rename = "response_range")]
    Range(Range<'a>),
    #[serde(rename = "response_put")]
    Put(Put<'a>),
    #[serde(rename = "response_delete_range")]
    Delete(Delete<'a>),
    #[serde(rename = "response_txn")]
    Txn(Box<Txn<'a>>),
}

impl<'a> From<&'a TxnResponse> for Txn<'a> {
    fn from(r: &'a TxnResponse) -> Self {
        let responses = r
            .responses
            .iter()
            .map(|op| ResponseOp {
                response: op.response.as_ref().map(|response| match response {
                    response_op::Response::ResponseRange(r) => OneOf::Range(r.into()),
                    response_op::Response::ResponsePut(r) => OneOf::Put(r.into()),
                    response_op::Response::ResponseDeleteRange(r) => OneOf::Delete(r.into()),
                    response_op::Response::ResponseTxn(r) => OneOf::Txn(Box::new(r.into())),
                }),
            })
            .collect();
        Txn { header: header(&r.header), succeeded: r.succeeded, responses }
    }
}

#[derive(Serialize)]
struct Member<'a> {
    #[serde(rename = "ID", skip_serializing_if = "is_zero")]
    id: u64,
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    #[serde(rename = "peerURLs", skip_serializing_if = "<[String]>::is_empty")]
    peer_urls: &'a [String],
    #[serde(rename = "clientURLs", skip_serializing_if = "<[String]>::is_empty")]
    client_urls: &'a [String],
    #[serde(rename = "isLearner", skip_serializing_if = "is_zero")]
    is_learner: bool,
}

impl<'a> From<&'a PbMember> for Member<'a> {
    fn from(m: &'a PbMember) -> Self {
        Member {
            id: m.id,
            name: &m.name,
            peer_urls: &m.peer_ur_ls,
            client_urls: &m.client_ur_ls,
            is_learner: m.is_learner,
        }
    }
}

#[derive(Serialize)]
struct MemberList<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    header: Option<Header>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    members: Vec<Member<'a>>,
}

/// etcd 3.5's `StatusResponse` (3.6 added fields that 3.5's etcdctl does not print).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Status<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    header: Option<Header>,
    #[serde(skip_serializing_if = "str::is_empty")]
    version: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    db_size: i64,
    #[serde(skip_serializing_if = "is_zero")]
    leader: u64,
    #[serde(skip_serializing_if = "is_zero")]
    raft_index: u64,
    #[serde(skip_serializing_if = "is_zero")]
    raft_term: u64,
    #[serde(skip_serializing_if = "is_zero")]
    raft_applied_index: u64,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    errors: &'a [String],
    #[serde(skip_serializing_if = "is_zero")]
    db_size_in_use: i64,
    #[serde(skip_serializing_if = "is_zero")]
    is_learner: bool,
}

impl<'a> From<&'a PbStatus> for Status<'a> {
    fn from(s: &'a PbStatus) -> Self {
        Status {
            header: header(&s.header),
            version: &s.version,
            db_size: s.db_size,
            leader: s.leader,
            raft_index: s.raft_index,
            raft_term: s.raft_term,
            raft_applied_index: s.raft_applied_index,
            errors: &s.errors,
            db_size_in_use: s.db_size_in_use,
            is_learner: s.is_learner,
        }
    }
}

#[derive(Serialize)]
struct Health<'a> {
    endpoint: &'a str,
    health: bool,
    took: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    error: &'a str,
}

#[derive(Serialize)]
struct EndpointStatusJson<'a> {
    #[serde(rename = "Endpoint")]
    endpoint: &'a str,
    #[serde(rename = "Status")]
    status: Status<'a>,
}

/// A reply's header alone: `{"header":{...}}`.
#[derive(Serialize)]
struct HeaderOnly {
    #[serde(skip_serializing_if = "Option::is_none")]
    header: Option<Header>,
}

/// clientv3's `LeaseGrantResponse` and `LeaseKeepAliveResponse`: the header embedded,
/// then untagged fields (so Go's field names, and no `omitempty`). Only the grant has
/// `Error`.
#[derive(Serialize)]
struct LeaseGranted<'a> {
    #[serde(flatten)]
    header: Option<Header>,
    #[serde(rename = "ID")]
    id: i64,
    #[serde(rename = "TTL")]
    ttl: i64,
    #[serde(rename = "Error", skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// clientv3's `LeaseTimeToLiveResponse`: `keys` is `null` when no key is attached.
#[derive(Serialize)]
struct TimeToLive<'a> {
    #[serde(flatten)]
    header: Option<Header>,
    id: i64,
    ttl: i64,
    #[serde(rename = "granted-ttl")]
    granted_ttl: i64,
    keys: Option<Vec<Base64<'a>>>,
}

#[derive(Serialize)]
struct Base64<'a>(#[serde(serialize_with = "base64")] &'a [u8]);

/// clientv3's `LeaseLeasesResponse`: always a list, empty or not.
#[derive(Serialize)]
struct Leases {
    #[serde(flatten)]
    header: Option<Header>,
    leases: Vec<LeaseId>,
}

#[derive(Serialize)]
struct LeaseId {
    id: i64,
}

#[derive(Serialize)]
struct AlarmMember {
    #[serde(rename = "memberID", skip_serializing_if = "is_zero")]
    member_id: u64,
    #[serde(skip_serializing_if = "is_zero")]
    alarm: i32,
}

#[derive(Serialize)]
struct Alarms {
    #[serde(skip_serializing_if = "Option::is_none")]
    header: Option<Header>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    alarms: Vec<AlarmMember>,
}

/// `AuthUserGetResponse` and `AuthRoleListResponse` (`roles`), `AuthUserListResponse`
/// (`users`): a header and a list of names.
#[derive(Serialize)]
struct Names<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    header: Option<Header>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    roles: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    users: &'a [String],
}

#[derive(Serialize)]
struct Permission<'a> {
    #[serde(rename = "permType", skip_serializing_if = "is_zero")]
    perm_type: i32,
    #[serde(skip_serializing_if = "<[u8]>::is_empty", serialize_with = "base64")]
    key: &'a [u8],
    #[serde(skip_serializing_if = "<[u8]>::is_empty", serialize_with = "base64")]
    range_end: &'a [u8],
}

#[derive(Serialize)]
struct Role<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    header: Option<Header>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    perm: Vec<Permission<'a>>,
}

#[derive(Serialize)]
struct AuthStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    header: Option<Header>,
    #[serde(skip_serializing_if = "is_zero")]
    enabled: bool,
    #[serde(rename = "authRevision", skip_serializing_if = "is_zero")]
    auth_revision: u64,
}

/// clientv3's `WatchResponse`: untagged fields, the header a value (so `{}` when empty),
/// the events `null` when there are none.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Watch<'a> {
    header: Header,
    events: Option<Vec<Event<'a>>>,
    compact_revision: i64,
    canceled: bool,
    created: bool,
}

#[derive(Serialize)]
struct Event<'a> {
    #[serde(rename = "type", skip_serializing_if = "is_zero")]
    kind: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    kv: Option<KeyValue<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_kv: Option<KeyValue<'a>>,
}

impl<'a> From<&'a PbEvent> for Event<'a> {
    fn from(e: &'a PbEvent) -> Self {
        Event {
            kind: e.r#type,
            kv: e.kv.as_ref().map(KeyValue::from),
            prev_kv: e.prev_kv.as_ref().map(KeyValue::from),
        }
    }
}

/// etcd 3.5's `HashKVResponse`, under etcdctl's `epHashKV` names.
#[derive(Serialize)]
struct EndpointHashJson<'a> {
    #[serde(rename = "Endpoint")]
    endpoint: &'a str,
    #[serde(rename = "HashKV")]
    hash: HashKv,
}

#[derive(Serialize)]
struct HashKv {
    #[serde(skip_serializing_if = "Option::is_none")]
    header: Option<Header>,
    #[serde(skip_serializing_if = "is_zero")]
    hash: u32,
    #[serde(skip_serializing_if = "is_zero")]
    compact_revision: i64,
    #[serde(skip_serializing_if = "is_zero")]
    hash_revision: i64,
}

impl From<&HashKvResponse> for HashKv {
    fn from(r: &HashKvResponse) -> Self {
        HashKv {
            header: header(&r.header),
            hash: r.hash,
            compact_revision: r.compact_revision,
            hash_revision: r.hash_revision,
        }
    }
}

/// serde_json's compact output with Go's extra escapes: `encoding/json` escapes `<`, `>`
/// and `&` (HTML safety) and U+2028/U+2029 (JavaScript safety). The control-character
/// escapes are already Go's (`\b`, `\f`, `\n`, `\r`, `\t`, `\u00XX`).
struct GoFormatter;

impl serde_json::ser::Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escape = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(escape.as_bytes())?;
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// etcdctl's `printJSON`: one line of JSON.
fn print(out: &mut Vec<u8>, value: &impl Serialize) {
    let mut serializer = serde_json::Serializer::with_formatter(&mut *out, GoFormatter);
    value.serialize(&mut serializer).expect("serializing plain structs into memory cannot fail");
    out.push(b'\n');
}

pub fn get(out: &mut Vec<u8>, response: &RangeResponse) {
    print(out, &Range::from(response));
}

pub fn put(out: &mut Vec<u8>, response: &PutResponse) {
    print(out, &Put::from(response));
}

pub fn del(out: &mut Vec<u8>, response: &DeleteRangeResponse) {
    print(out, &Delete::from(response));
}

pub fn txn(out: &mut Vec<u8>, response: &TxnResponse) {
    print(out, &Txn::from(response));
}

pub fn member_list(out: &mut Vec<u8>, response: &MemberListResponse) {
    let list = MemberList {
        header: header(&response.header),
        members: response.members.iter().map(Member::from).collect(),
    };
    print(out, &list);
}

/// `member list -w json --hex`: etcdctl 3.5 writes this one by hand, with ids as hex
/// strings, no revision, every header field even when zero, `clientURLS` spelled so, and
/// names copied in without escaping.
pub fn member_list_hex(out: &mut Vec<u8>, response: &MemberListResponse) {
    let h = response.header.unwrap_or_default();
    let mut text = format!(
        "{{\"header\":{{\"cluster_id\":\"{:x}\",\"member_id\":\"{:x}\",\"raft_term\":{}}}",
        h.cluster_id, h.member_id, h.raft_term
    );
    for (i, m) in response.members.iter().enumerate() {
        text.push_str(if i == 0 { ",\"members\":[" } else { "," });
        let urls = |urls: &[String]| {
            let mut buffer = Vec::new();
            if urls.is_empty() {
                buffer.extend_from_slice(b"null");
            } else {
                let mut serializer = serde_json::Serializer::with_formatter(&mut buffer, GoFormatter);
                urls.serialize(&mut serializer).expect("serializing strings into memory cannot fail");
            }
            String::from_utf8(buffer).expect("JSON output is UTF-8")
        };
        text.push_str(&format!(
            "{{\"ID\":\"{:x}\",\"name\":\"{}\",\"peerURLs\":{},\"clientURLS\":{}}}",
            m.id,
            m.name,
            urls(&m.peer_ur_ls),
            urls(&m.client_ur_ls)
        ));
        if i == response.members.len() - 1 {
            text.push(']');
        }
    }
    text.push_str("}\n");
    out.extend_from_slice(text.as_bytes());
}

pub fn reply(out: &mut Vec<u8>, reply: Reply<'_>) {
    fn names(out: &mut Vec<u8>, h: &Option<ResponseHeader>, roles: &[String], users: &[String]) {
        print(out, &Names { header: header(h), roles, users })
    }
    match reply {
        Reply::LeaseGrant(r) => print(
            out,
            &LeaseGranted { header: header(&r.header), id: r.id, ttl: r.ttl, error: Some(&r.error) },
        ),
        Reply::LeaseKeepAlive(r) => {
            print(out, &LeaseGranted { header: header(&r.header), id: r.id, ttl: r.ttl, error: None })
        }
        Reply::LeaseTimeToLive(r) => print(
            out,
            &TimeToLive {
                header: header(&r.header),
                id: r.id,
                ttl: r.ttl,
                granted_ttl: r.granted_ttl,
                keys: (!r.keys.is_empty()).then(|| r.keys.iter().map(|k| Base64(k)).collect()),
            },
        ),
        Reply::LeaseList(r) => print(
            out,
            &Leases {
                header: header(&r.header),
                leases: r.leases.iter().map(|l| LeaseId { id: l.id }).collect(),
            },
        ),
        Reply::Header(h) | Reply::LeaseRevoke(h) | Reply::MoveLeader(h) => {
            print(out, &HeaderOnly { header: header(h) })
        }
        Reply::Alarm(r) => print(
            out,
            &Alarms {
                header: header(&r.header),
                alarms: r
                    .alarms
                    .iter()
                    .map(|a| AlarmMember { member_id: a.member_id, alarm: a.alarm })
                    .collect(),
            },
        ),
        Reply::UserGet(r) => names(out, &r.header, &r.roles, &[]),
        Reply::UserList(r) => names(out, &r.header, &[], &r.users),
        Reply::RoleList(r) => names(out, &r.header, &r.roles, &[]),
        Reply::RoleGet(r) => print(
            out,
            &Role {
                header: header(&r.header),
                perm: r
                    .perm
                    .iter()
                    .map(|p| Permission { perm_type: p.perm_type, key: &p.key, range_end: &p.range_end })
                    .collect(),
            },
        ),
        Reply::AuthStatus(r) => print(
            out,
            &AuthStatus { header: header(&r.header), enabled: r.enabled, auth_revision: r.auth_revision },
        ),
        Reply::Watch(r) => print(
            out,
            &Watch {
                header: header(&r.header).unwrap_or_default(),
                events: (!r.events.is_empty()).then(|| r.events.iter().map(Event::from).collect()),
                compact_revision: r.compact_revision,
                canceled: r.canceled,
                created: r.created,
            },
        ),
    }
}

pub fn endpoint_hashkv(out: &mut Vec<u8>, hashes: &[EndpointHash]) {
    let list: Vec<EndpointHashJson> =
        hashes.iter().map(|h| EndpointHashJson { endpoint: &h.endpoint, hash: (&h.hash).into() }).collect();
    print(out, &list);
}

pub fn endpoint_health(out: &mut Vec<u8>, health: &[EndpointHealth]) {
    let list: Vec<Health> = health
        .iter()
        .map(|h| Health { endpoint: &h.endpoint, health: h.health, took: &h.took, error: &h.error })
        .collect();
    print(out, &list);
}

pub fn endpoint_status(out: &mut Vec<u8>, statuses: &[EndpointStatus]) {
    let list: Vec<EndpointStatusJson> = statuses
        .iter()
        .map(|s| EndpointStatusJson { endpoint: &s.endpoint, status: (&s.status).into() })
        .collect();
    print(out, &list);
}

#[cfg(test)]
mod tests {
    use synod_api::etcdserverpb::ResponseOp as PbResponseOp;

    use super::*;

    fn text(write: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        write(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn full_header() -> Option<ResponseHeader> {
        Some(ResponseHeader { cluster_id: 1, member_id: 2, revision: 3, raft_term: 4 })
    }

    /// Zero fields are left out, bytes are base64 and numbers stay numbers.
    #[test]
    fn range_shape() {
        let response = RangeResponse {
            header: full_header(),
            kvs: vec![PbKeyValue {
                key: b"foo".to_vec(),
                create_revision: 2,
                mod_revision: 3,
                version: 2,
                value: b"baz".to_vec(),
                lease: 0,
            }],
            more: false,
            count: 1,
        };
        assert_eq!(
            text(|out| get(out, &response)),
            r#"{"header":{"cluster_id":1,"member_id":2,"revision":3,"raft_term":4},"kvs":[{"key":"Zm9v","create_revision":2,"mod_revision":3,"version":2,"value":"YmF6"}],"count":1}"#.to_owned()
                + "\n"
        );
        assert_eq!(text(|out| get(out, &RangeResponse::default())), "{}\n");
    }

    /// A txn's results are wrapped as etcd 3.5's Go structs marshal them.
    #[test]
    fn txn_shape() {
        let inner = |response| PbResponseOp { response: Some(response) };
        let revision = Some(ResponseHeader { revision: 4, ..Default::default() });
        let response = TxnResponse {
            header: full_header(),
            succeeded: true,
            responses: vec![
                inner(response_op::Response::ResponsePut(PutResponse { header: revision, prev_kv: None })),
                inner(response_op::Response::ResponseDeleteRange(DeleteRangeResponse {
                    header: revision,
                    ..Default::default()
                })),
                PbResponseOp { response: None },
            ],
        };
        assert_eq!(
            text(|out| txn(out, &response)),
            r#"{"header":{"cluster_id":1,"member_id":2,"revision":3,"raft_term":4},"succeeded":true,"responses":[{"Response":{"response_put":{"header":{"revision":4}}}},{"Response":{"response_delete_range":{"header":{"revision":4}}}},{"Response":null}]}"#.to_owned()
                + "\n"
        );
    }

    /// Strings get Go's HTML-safe escapes.
    #[test]
    fn go_string_escapes() {
        let health = [EndpointHealth {
            endpoint: "a<b>&c\u{2028}\"\n".into(),
            health: false,
            took: "1ms".into(),
            error: String::new(),
        }];
        assert_eq!(
            text(|out| endpoint_health(out, &health)),
            "[{\"endpoint\":\"a\\u003cb\\u003e\\u0026c\\u2028\\\"\\n\",\"health\":false,\"took\":\"1ms\"}]\n"
        );
    }

    /// The hand-written hex member list keeps etcdctl's quirks.
    #[test]
    fn member_list_in_hex() {
        let response = MemberListResponse {
            header: full_header(),
            members: vec![PbMember {
                id: 255,
                name: "m".into(),
                peer_ur_ls: vec!["http://p".into()],
                client_ur_ls: vec![],
                is_learner: false,
            }],
        };
        assert_eq!(
            text(|out| member_list_hex(out, &response)),
            r#"{"header":{"cluster_id":"1","member_id":"2","raft_term":4},"members":[{"ID":"ff","name":"m","peerURLs":["http://p"],"clientURLS":null}]}"#.to_owned()
                + "\n"
        );
    }
}
