//! A workload call as the etcd request a client sends, and the reply as the checker reads
//! it. The calls go to the member's real API handlers (what the gRPC service runs).

use synod_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use synod_api::etcdserverpb::request_op::Request as Op;
use synod_api::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, ResponseHeader, TxnRequest,
};
use synod_check::{Call, Reply};
use synod_server::api::Api;

fn revision(header: Option<ResponseHeader>) -> Option<i64> {
    header.map(|h| h.revision)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Sends `call` to `api`; returns the reply and the header's revision.
pub async fn execute(api: &Api, call: &Call) -> Result<(Reply, Option<i64>), tonic::Status> {
    match call {
        Call::Get { key } => {
            let request = RangeRequest { key: key.clone().into_bytes(), ..Default::default() };
            let response = api.range(request).await?;
            let value = response.kvs.first().map(|kv| text(&kv.value));
            Ok((Reply::Get { value }, revision(response.header)))
        }
        Call::Put { key, value } => {
            let request = PutRequest {
                key: key.clone().into_bytes(),
                value: value.clone().into_bytes(),
                ..Default::default()
            };
            let response = api.put(request).await?;
            Ok((Reply::Put, revision(response.header)))
        }
        Call::Delete { key } => {
            let request = DeleteRangeRequest { key: key.clone().into_bytes(), ..Default::default() };
            let response = api.delete_range(request).await?;
            Ok((Reply::Delete { deleted: response.deleted > 0 }, revision(response.header)))
        }
        Call::Cas { key, expect, value } => {
            let compare = match expect {
                Some(expect) => Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Value as i32,
                    key: key.clone().into_bytes(),
                    target_union: Some(TargetUnion::Value(expect.clone().into_bytes())),
                    ..Default::default()
                },
                // A key that does not exist has create revision 0.
                None => Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Create as i32,
                    key: key.clone().into_bytes(),
                    target_union: Some(TargetUnion::CreateRevision(0)),
                    ..Default::default()
                },
            };
            let put = PutRequest {
                key: key.clone().into_bytes(),
                value: value.clone().into_bytes(),
                ..Default::default()
            };
            let request = TxnRequest {
                compare: vec![compare],
                success: vec![RequestOp { request: Some(Op::RequestPut(put)) }],
                failure: vec![],
            };
            let response = api.txn(request).await?;
            Ok((Reply::Cas { succeeded: response.succeeded }, revision(response.header)))
        }
        Call::Add { .. } | Call::ReadCounter { .. } | Call::Acquire { .. } | Call::Release { .. } => {
            Err(tonic::Status::unimplemented("counters and locks are not built yet (issue 7)"))
        }
    }
}
