//! A workload call sent to a member's real API handlers (what its gRPC service runs), as the
//! etcd request synod-check maps it to.

use synod_check::etcd::{self, EtcdRequest, EtcdResponse};
use synod_check::{Call, Reply};
use synod_server::api::Api;

/// Sends `call` to `api`; returns the reply and the header's revision.
pub async fn execute(api: &Api, call: &Call) -> Result<(Reply, Option<i64>), tonic::Status> {
    let response = match etcd::request(call).map_err(tonic::Status::unimplemented)? {
        EtcdRequest::Range(request) => EtcdResponse::Range(api.range(request).await?),
        EtcdRequest::Put(request) => EtcdResponse::Put(api.put(request).await?),
        EtcdRequest::DeleteRange(request) => EtcdResponse::DeleteRange(api.delete_range(request).await?),
        EtcdRequest::Txn(request) => EtcdResponse::Txn(api.txn(request).await?),
    };
    Ok(etcd::reply(&response))
}
