//! The `fields` format (etcdctl's `printer_fields.go`): one `"Name" : value` line per
//! field, strings quoted with Go's `%q`. It is the only format in which etcdctl 3.5 allows
//! `get --count-only`.

use synod_api::authpb::permission::Type as PermType;
use synod_api::etcdserverpb::{
    AlarmType, DeleteRangeResponse, MemberListResponse, PutResponse, RangeResponse, ResponseHeader,
    TxnResponse, response_op,
};
use synod_api::mvccpb::KeyValue;
use synod_api::mvccpb::event::EventType;

use super::{EndpointHash, EndpointHealth, EndpointStatus, Reply};
use synod_base::go_fmt::quote;

fn line(out: &mut Vec<u8>, text: String) {
    out.extend_from_slice(text.as_bytes());
    out.push(b'\n');
}

fn header(out: &mut Vec<u8>, header: &Option<ResponseHeader>) {
    let h = header.unwrap_or_default();
    line(out, format!("\"ClusterID\" : {}", h.cluster_id));
    line(out, format!("\"MemberID\" : {}", h.member_id));
    line(out, format!("\"Revision\" : {}", h.revision));
    line(out, format!("\"RaftTerm\" : {}", h.raft_term));
}

fn key_value(out: &mut Vec<u8>, prefix: &str, kv: &KeyValue) {
    line(out, format!("\"{prefix}Key\" : {}", quote(&kv.key)));
    line(out, format!("\"{prefix}CreateRevision\" : {}", kv.create_revision));
    line(out, format!("\"{prefix}ModRevision\" : {}", kv.mod_revision));
    line(out, format!("\"{prefix}Version\" : {}", kv.version));
    line(out, format!("\"{prefix}Value\" : {}", quote(&kv.value)));
    line(out, format!("\"{prefix}Lease\" : {}", kv.lease));
}

pub fn get(out: &mut Vec<u8>, response: &RangeResponse) {
    header(out, &response.header);
    for kv in &response.kvs {
        key_value(out, "", kv);
    }
    line(out, format!("\"More\" : {}", response.more));
    line(out, format!("\"Count\" : {}", response.count));
}

pub fn put(out: &mut Vec<u8>, response: &PutResponse) {
    header(out, &response.header);
    if let Some(prev_kv) = &response.prev_kv {
        key_value(out, "Prev", prev_kv);
    }
}

pub fn del(out: &mut Vec<u8>, response: &DeleteRangeResponse) {
    header(out, &response.header);
    line(out, format!("\"Deleted\" : {}", response.deleted));
    for kv in &response.prev_kvs {
        key_value(out, "Prev", kv);
    }
}

pub fn txn(out: &mut Vec<u8>, response: &TxnResponse) {
    header(out, &response.header);
    line(out, format!("\"Succeeded\" : {}", response.succeeded));
    for op in &response.responses {
        match &op.response {
            Some(response_op::Response::ResponseDeleteRange(r)) => del(out, r),
            Some(response_op::Response::ResponsePut(r)) => put(out, r),
            Some(response_op::Response::ResponseRange(r)) => get(out, r),
            other => line(out, format!("\"Unknown\" : {}", quote(format!("{other:?}").as_bytes()))),
        }
    }
}

pub fn member_list(out: &mut Vec<u8>, response: &MemberListResponse) {
    header(out, &response.header);
    for m in &response.members {
        line(out, format!("\"ID\" : {}", m.id));
        line(out, format!("\"Name\" : {}", quote(m.name.as_bytes())));
        for url in &m.peer_ur_ls {
            line(out, format!("\"PeerURL\" : {}", quote(url.as_bytes())));
        }
        for url in &m.client_ur_ls {
            line(out, format!("\"ClientURL\" : {}", quote(url.as_bytes())));
        }
        line(out, format!("\"IsLearner\" : {}", m.is_learner));
        out.push(b'\n');
    }
}

/// The fields of a [`Reply`]; false for the replies etcdctl's fields printer does not
/// offer (user get and list, move-leader, auth status).
///
/// etcdctl crashes (a nil header) on an alarm reply without a header, which is what etcd
/// 3.4 sends to `alarm list` and what clientv3 makes of `alarm disarm`; this prints zeros
/// for it instead.
pub fn reply(out: &mut Vec<u8>, reply: Reply<'_>) -> bool {
    match reply {
        Reply::LeaseGrant(r) => {
            header(out, &r.header);
            line(out, format!("\"ID\" : {}", r.id));
            line(out, format!("\"TTL\" : {}", r.ttl));
        }
        Reply::LeaseKeepAlive(r) => {
            header(out, &r.header);
            line(out, format!("\"ID\" : {}", r.id));
            line(out, format!("\"TTL\" : {}", r.ttl));
        }
        Reply::LeaseTimeToLive(r) => {
            header(out, &r.header);
            line(out, format!("\"ID\" : {}", r.id));
            line(out, format!("\"TTL\" : {}", r.ttl));
            line(out, format!("\"GrantedTTL\" : {}", r.granted_ttl));
            for key in &r.keys {
                line(out, format!("\"Key\" : {}", quote(key)));
            }
        }
        Reply::LeaseList(r) => {
            header(out, &r.header);
            for lease in &r.leases {
                line(out, format!("\"ID\" : {}", lease.id));
            }
        }
        Reply::Header(h) | Reply::LeaseRevoke(h) => header(out, h),
        Reply::Alarm(r) => {
            header(out, &r.header);
            for alarm in &r.alarms {
                let name = AlarmType::try_from(alarm.alarm).map_or("UNKNOWN", |a| a.as_str_name());
                line(out, format!("\"MemberID\" : {}", alarm.member_id));
                line(out, format!("\"AlarmType\" : {name}"));
                out.push(b'\n');
            }
        }
        Reply::RoleGet(r) => {
            header(out, &r.header);
            for perm in &r.perm {
                let kind = PermType::try_from(perm.perm_type).map_or("UNKNOWN", |t| t.as_str_name());
                // etcdctl's Println puts a second space after the colon here.
                line(out, format!("\"PermType\" :  {kind}"));
                line(out, format!("\"Key\" : {}", quote(&perm.key)));
                line(out, format!("\"RangeEnd\" : {}", quote(&perm.range_end)));
            }
        }
        Reply::RoleList(r) => {
            header(out, &r.header);
            let roles: String = r.roles.iter().map(|role| format!(" {}", quote(role.as_bytes()))).collect();
            line(out, format!("\"Roles\" :{roles}"));
        }
        Reply::Watch(r) => {
            header(out, &r.header);
            for event in &r.events {
                let kind = EventType::try_from(event.r#type).map_or("UNKNOWN", |t| t.as_str_name());
                line(out, format!("\"Type\" : {kind}"));
                if let Some(prev) = &event.prev_kv {
                    key_value(out, "Prev", prev);
                }
                key_value(out, "", event.kv.as_ref().unwrap_or(&KeyValue::default()));
            }
        }
        Reply::UserGet(_) | Reply::UserList(_) | Reply::MoveLeader(_) | Reply::AuthStatus(_) => return false,
    }
    true
}

pub fn endpoint_hashkv(out: &mut Vec<u8>, hashes: &[EndpointHash]) {
    for h in hashes {
        header(out, &h.hash.header);
        line(out, format!("\"Endpoint\" : {}", quote(h.endpoint.as_bytes())));
        line(out, format!("\"Hash\" : {}", h.hash.hash));
        out.push(b'\n');
    }
}

pub fn endpoint_health(out: &mut Vec<u8>, health: &[EndpointHealth]) {
    for h in health {
        line(out, format!("\"Endpoint\" : {}", quote(h.endpoint.as_bytes())));
        line(out, format!("\"Health\" : {}", h.health));
        line(out, format!("\"Took\" : {}", h.took));
        line(out, format!("\"Error\" : {}", h.error));
        out.push(b'\n');
    }
}

pub fn endpoint_status(out: &mut Vec<u8>, statuses: &[EndpointStatus]) {
    for s in statuses {
        let status = &s.status;
        header(out, &status.header);
        line(out, format!("\"Version\" : {}", quote(status.version.as_bytes())));
        line(out, format!("\"DBSize\" : {}", status.db_size));
        line(out, format!("\"Leader\" : {}", status.leader));
        line(out, format!("\"IsLearner\" : {}", status.is_learner));
        line(out, format!("\"RaftIndex\" : {}", status.raft_index));
        line(out, format!("\"RaftTerm\" : {}", status.raft_term));
        line(out, format!("\"RaftAppliedIndex\" : {}", status.raft_applied_index));
        // Go's `%v` of a string slice: `[a b]`.
        line(out, format!("\"Errors\" : [{}]", status.errors.join(" ")));
        line(out, format!("\"Endpoint\" : {}", quote(s.endpoint.as_bytes())));
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A get lists the header, each key-value's fields, then More and Count.
    #[test]
    fn get_fields() {
        let response = RangeResponse {
            header: Some(ResponseHeader { cluster_id: 1, member_id: 2, revision: 3, raft_term: 4 }),
            kvs: vec![KeyValue {
                key: b"k".to_vec(),
                value: b"v\n".to_vec(),
                version: 1,
                ..Default::default()
            }],
            more: true,
            count: 5,
        };
        let mut out = Vec::new();
        get(&mut out, &response);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            concat!(
                "\"ClusterID\" : 1\n\"MemberID\" : 2\n\"Revision\" : 3\n\"RaftTerm\" : 4\n",
                "\"Key\" : \"k\"\n\"CreateRevision\" : 0\n\"ModRevision\" : 0\n\"Version\" : 1\n",
                "\"Value\" : \"v\\n\"\n\"Lease\" : 0\n\"More\" : true\n\"Count\" : 5\n"
            )
        );
    }
}
