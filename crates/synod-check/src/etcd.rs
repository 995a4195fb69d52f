//! Calls as etcd's KV requests, and etcd's responses as replies: the one translation both
//! harnesses use, whether they send the request over gRPC (synod-chaos) or hand it to a
//! member's API handlers (synod-sim).

use synod_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use synod_api::etcdserverpb::request_op::Request;
use synod_api::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    RequestOp, ResponseHeader, TxnRequest, TxnResponse,
};

use crate::{Call, Reply};

/// The etcd request a call is.
#[derive(Clone, Debug, PartialEq)]
pub enum EtcdRequest {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
}

/// The etcd response to an [`EtcdRequest`].
#[derive(Clone, Debug, PartialEq)]
pub enum EtcdResponse {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
}

/// The etcd request for `call`; counter and lock calls have none (they are not KV calls).
pub fn request(call: &Call) -> Result<EtcdRequest, String> {
    let bytes = |text: &str| text.as_bytes().to_vec();
    Ok(match call {
        Call::Get { key } => EtcdRequest::Range(RangeRequest { key: bytes(key), ..Default::default() }),
        Call::Put { key, value } => {
            EtcdRequest::Put(PutRequest { key: bytes(key), value: bytes(value), ..Default::default() })
        }
        Call::Delete { key } => {
            EtcdRequest::DeleteRange(DeleteRangeRequest { key: bytes(key), ..Default::default() })
        }
        Call::Cas { key, expect, value } => {
            let compare = match expect {
                Some(expect) => Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Value as i32,
                    key: bytes(key),
                    target_union: Some(TargetUnion::Value(bytes(expect))),
                    ..Default::default()
                },
                // A key that does not exist has create revision 0.
                None => Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Create as i32,
                    key: bytes(key),
                    target_union: Some(TargetUnion::CreateRevision(0)),
                    ..Default::default()
                },
            };
            let put = PutRequest { key: bytes(key), value: bytes(value), ..Default::default() };
            EtcdRequest::Txn(TxnRequest {
                compare: vec![compare],
                success: vec![RequestOp { request: Some(Request::RequestPut(put)) }],
                failure: vec![],
            })
        }
        Call::Add { .. } | Call::ReadCounter { .. } | Call::Acquire { .. } | Call::Release { .. } => {
            return Err(format!("{call:?} is not an etcd KV call"));
        }
    })
}

/// The Txn that releases a lock held by the key `key` with fencing token `token`: it
/// deletes the key only while the key is still that grant's (its create revision is the
/// token), so a holder that was superseded releases nothing. Its `succeeded` is
/// [`Reply::Release`]'s `released`.
pub fn fenced_release(key: &[u8], token: i64) -> TxnRequest {
    let compare = Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        target_union: Some(TargetUnion::CreateRevision(token)),
        ..Default::default()
    };
    let delete = DeleteRangeRequest { key: key.to_vec(), ..Default::default() };
    TxnRequest {
        compare: vec![compare],
        success: vec![RequestOp { request: Some(Request::RequestDeleteRange(delete)) }],
        failure: vec![],
    }
}

/// What a client was told, and the header's revision.
pub fn reply(response: &EtcdResponse) -> (Reply, Option<i64>) {
    let revision = |header: &Option<ResponseHeader>| header.as_ref().map(|h| h.revision);
    match response {
        EtcdResponse::Range(r) => {
            let value = r.kvs.first().map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
            (Reply::Get { value }, revision(&r.header))
        }
        EtcdResponse::Put(r) => (Reply::Put, revision(&r.header)),
        EtcdResponse::DeleteRange(r) => (Reply::Delete { deleted: r.deleted > 0 }, revision(&r.header)),
        EtcdResponse::Txn(r) => (Reply::Cas { succeeded: r.succeeded }, revision(&r.header)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A compare-and-set on an absent key compares the create revision with 0, as etcd
    /// clients do, and puts on success only.
    #[test]
    fn cas_on_an_absent_key_compares_the_create_revision() {
        let call = Call::Cas { key: "k".into(), expect: None, value: "v".into() };
        let Ok(EtcdRequest::Txn(txn)) = request(&call) else { panic!("a CAS is a Txn") };
        assert_eq!(txn.compare[0].target, CompareTarget::Create as i32);
        assert_eq!(txn.compare[0].target_union, Some(TargetUnion::CreateRevision(0)));
        assert_eq!(txn.success.len(), 1);
        assert!(txn.failure.is_empty());
        assert!(request(&Call::Add { key: "c".into(), delta: 1 }).is_err());
    }

    /// A delete that removed nothing says so.
    #[test]
    fn replies_carry_what_etcd_said() {
        let header = Some(ResponseHeader { revision: 7, ..Default::default() });
        let deleted =
            EtcdResponse::DeleteRange(DeleteRangeResponse { header, deleted: 0, ..Default::default() });
        assert_eq!(reply(&deleted), (Reply::Delete { deleted: false }, Some(7)));
    }
}
