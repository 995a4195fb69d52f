//! A workload call sent to a member's real API handlers (what its gRPC service runs), as the
//! etcd request synod-check maps it to, or the native counter's request.

use synod_api::synod::v1::{AddRequest, GetRequest};
use synod_check::etcd::{self, EtcdRequest, EtcdResponse};
use synod_check::{Call, Reply};
use synod_server::api::Api;

/// Sends `call` to `api`; returns the reply and the header's revision.
pub async fn execute(api: &Api, call: &Call) -> Result<(Reply, Option<i64>), tonic::Status> {
    let revision = |header: Option<synod_api::etcdserverpb::ResponseHeader>| header.map(|h| h.revision);
    match call {
        Call::Add { key, delta } => {
            let request = AddRequest { key: key.clone().into_bytes(), delta: *delta, ..Default::default() };
            let response = api.counter_add(request).await?;
            return Ok((Reply::Add { value: response.value }, revision(response.header)));
        }
        Call::ReadCounter { key } => {
            let request = GetRequest { key: key.clone().into_bytes(), serializable: false };
            let response = api.counter_get(request).await?;
            return Ok((Reply::ReadCounter { value: response.value }, revision(response.header)));
        }
        _ => {}
    }
    let response = match etcd::request(call).map_err(tonic::Status::unimplemented)? {
        EtcdRequest::Range(request) => EtcdResponse::Range(api.range(request).await?),
        EtcdRequest::Put(request) => EtcdResponse::Put(api.put(request).await?),
        EtcdRequest::DeleteRange(request) => EtcdResponse::DeleteRange(api.delete_range(request).await?),
        EtcdRequest::Txn(request) => EtcdResponse::Txn(api.txn(request).await?),
    };
    Ok(etcd::reply(&response))
}
