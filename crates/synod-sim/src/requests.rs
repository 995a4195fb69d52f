//! A workload call sent to a member's real API handlers (what its gRPC service runs), as the
//! etcd request synod-check maps it to, the native counter's request, or the lock calls: an
//! Acquire through the Lock service (then a read of its token), a Release by a Txn fenced by
//! the token.

use synod_api::etcdserverpb::RangeRequest;
use synod_api::synod::v1::{AddRequest, GetRequest};
use synod_api::v3lockpb::LockRequest;
use synod_check::etcd::{self, EtcdRequest, EtcdResponse};
use synod_check::{Call, Reply};
use synod_server::api::Api;

/// Sends `call` to `api` for a client whose session lease is `lease` (0: none; lock calls
/// need one); returns the reply and the header's revision.
pub async fn execute(api: &Api, call: &Call, lease: i64) -> Result<(Reply, Option<i64>), tonic::Status> {
    let revision = |header: Option<synod_api::etcdserverpb::ResponseHeader>| header.map(|h| h.revision);
    match call {
        Call::Acquire { lock, .. } => {
            let locked = api.lock(LockRequest { name: lock.clone().into_bytes(), lease }).await?;
            // The token is the lock key's create revision.
            let read = api.range(RangeRequest { key: locked.key, ..Default::default() }).await?;
            let token = read
                .kvs
                .first()
                .map(|kv| kv.create_revision)
                .ok_or_else(|| tonic::Status::unavailable("the lock's key vanished after the grant"))?;
            return Ok((Reply::Acquire { token }, revision(read.header)));
        }
        Call::Release { lock, token, .. } => {
            // The lock key the Lock service gives the client's lease.
            let key = format!("{lock}/{lease:x}").into_bytes();
            let response = api.txn(etcd::fenced_release(&key, *token)).await?;
            return Ok((Reply::Release { released: response.succeeded }, revision(response.header)));
        }
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
