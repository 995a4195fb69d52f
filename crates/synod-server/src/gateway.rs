//! The HTTP side of the client port: etcd's JSON gateway (`POST /v3/...`), beside the
//! probes and metrics of [`crate::probes`].
//!
//! The gateway follows grpc-gateway as etcd runs it: proto3 JSON with base64 bytes and
//! 64-bit integers as strings, proto field names on output, either spelling on input,
//! unknown fields ignored, an empty body taken as an empty request, and errors as
//! `{"error", "code", "message"}` with grpc-gateway's HTTP statuses. `/v3beta/` is accepted
//! as an alias of `/v3/`, as etcd 3.5 does.

use std::future::Future;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use synod_api::etcdserverpb::{LeaseKeepAliveRequest, WatchRequest};
use synod_api::v3electionpb::LeaderRequest;
use tonic::Status;

use crate::api::Api;
use crate::auth::Credentials;
use crate::errors;

/// Decodes a request body, runs `handler`, and encodes its reply or error.
async fn call<Req, Resp, Fut>(body: Bytes, handler: impl FnOnce(Req) -> Fut) -> Response
where
    Req: DeserializeOwned + Default,
    Resp: Serialize,
    Fut: Future<Output = Result<Resp, Status>>,
{
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        Ok(Req::default())
    } else {
        serde_json::from_slice::<serde_json::Value>(&body)
            .and_then(|mut value| {
                drop_nulls(&mut value);
                serde_json::from_value::<Req>(value)
            })
            .map_err(|e| Status::invalid_argument(e.to_string()))
    };
    let reply = match request {
        Ok(request) => handler(request).await,
        Err(status) => Err(status),
    };
    match reply {
        Ok(response) => axum::Json(response).into_response(),
        Err(status) => {
            (errors::http_status(status.code()), axum::Json(errors::http_body(&status))).into_response()
        }
    }
}

/// Removes object members whose value is `null`: grpc-gateway reads them as "not set".
fn drop_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(members) => {
            members.retain(|_, v| !v.is_null());
            members.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

macro_rules! unary {
    ($method:ident) => {
        post(|State(api): State<Api>, headers: http::HeaderMap, body: Bytes| async move {
            call(body, |request| async move {
                let admitted = api.admit(&request, &Credentials::from_headers(&headers))?;
                crate::auth::run_as(admitted, api.$method(request)).await
            })
            .await
        })
    };
}

/// The routes of the client port's HTTP side; gRPC routes are merged in by the caller.
pub fn router(api: Api, body_limit_bytes: usize) -> Router {
    let mut router = Router::new();
    for prefix in ["/v3", "/v3beta"] {
        router = router
            .route(&format!("{prefix}/kv/range"), unary!(range))
            .route(&format!("{prefix}/kv/put"), unary!(put))
            .route(&format!("{prefix}/kv/deleterange"), unary!(delete_range))
            .route(&format!("{prefix}/kv/txn"), unary!(txn))
            .route(&format!("{prefix}/kv/compaction"), unary!(compact))
            .route(&format!("{prefix}/maintenance/status"), unary!(status))
            .route(&format!("{prefix}/maintenance/alarm"), unary!(alarm))
            .route(&format!("{prefix}/maintenance/defragment"), unary!(defragment))
            .route(&format!("{prefix}/maintenance/hash"), unary!(hash))
            .route(&format!("{prefix}/maintenance/hashkv"), unary!(hash_kv))
            .route(&format!("{prefix}/maintenance/transfer-leadership"), unary!(move_leader))
            .route(&format!("{prefix}/cluster/member/list"), unary!(member_list))
            .route(&format!("{prefix}/cluster/member/add"), unary!(member_add))
            .route(&format!("{prefix}/cluster/member/remove"), unary!(member_remove))
            .route(&format!("{prefix}/cluster/member/update"), unary!(member_update))
            .route(&format!("{prefix}/cluster/member/promote"), unary!(member_promote))
            .route(&format!("{prefix}/lease/grant"), unary!(lease_grant))
            .route(&format!("{prefix}/lease/revoke"), unary!(lease_revoke))
            .route(&format!("{prefix}/kv/lease/revoke"), unary!(lease_revoke))
            .route(&format!("{prefix}/lease/timetolive"), unary!(lease_time_to_live))
            .route(&format!("{prefix}/kv/lease/timetolive"), unary!(lease_time_to_live))
            .route(&format!("{prefix}/lease/leases"), unary!(lease_leases))
            .route(&format!("{prefix}/kv/lease/leases"), unary!(lease_leases))
            .route(&format!("{prefix}/lease/keepalive"), post(keep_alive))
            .route(&format!("{prefix}/watch"), post(watch))
            .route(&format!("{prefix}/lock/lock"), unary!(lock))
            .route(&format!("{prefix}/lock/unlock"), unary!(unlock))
            .route(&format!("{prefix}/election/campaign"), unary!(campaign))
            .route(&format!("{prefix}/election/proclaim"), unary!(proclaim))
            .route(&format!("{prefix}/election/leader"), unary!(leader))
            .route(&format!("{prefix}/election/resign"), unary!(resign))
            .route(&format!("{prefix}/election/observe"), post(observe))
            .route(&format!("{prefix}/auth/enable"), unary!(auth_enable))
            .route(&format!("{prefix}/auth/disable"), unary!(auth_disable))
            .route(&format!("{prefix}/auth/status"), unary!(auth_status))
            .route(&format!("{prefix}/auth/authenticate"), unary!(authenticate))
            .route(&format!("{prefix}/auth/user/add"), unary!(user_add))
            .route(&format!("{prefix}/auth/user/get"), unary!(user_get))
            .route(&format!("{prefix}/auth/user/list"), unary!(user_list))
            .route(&format!("{prefix}/auth/user/delete"), unary!(user_delete))
            .route(&format!("{prefix}/auth/user/changepw"), unary!(user_change_password))
            .route(&format!("{prefix}/auth/user/grant"), unary!(user_grant_role))
            .route(&format!("{prefix}/auth/user/revoke"), unary!(user_revoke_role))
            .route(&format!("{prefix}/auth/role/add"), unary!(role_add))
            .route(&format!("{prefix}/auth/role/get"), unary!(role_get))
            .route(&format!("{prefix}/auth/role/list"), unary!(role_list))
            .route(&format!("{prefix}/auth/role/delete"), unary!(role_delete))
            .route(&format!("{prefix}/auth/role/grant"), unary!(role_grant_permission))
            .route(&format!("{prefix}/auth/role/revoke"), unary!(role_revoke_permission));
    }
    router
        .route("/v1/counter/add", unary!(counter_add))
        .route("/v1/counter/get", unary!(counter_get))
        .merge(crate::probes::routes())
        .layer(DefaultBodyLimit::max(body_limit_bytes))
        .with_state(api)
}

/// The requests of a streaming call's body: JSON objects one after another, as
/// grpc-gateway reads them (an empty body is one empty request).
fn stream_requests<Req: DeserializeOwned + Default>(body: &[u8]) -> Result<Vec<Req>, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(vec![Req::default()]);
    }
    serde_json::Deserializer::from_slice(body)
        .into_iter::<serde_json::Value>()
        .map(|value| {
            let mut value = value.map_err(|e| Status::invalid_argument(e.to_string()))?;
            drop_nulls(&mut value);
            serde_json::from_value::<Req>(value).map_err(|e| Status::invalid_argument(e.to_string()))
        })
        .collect()
}

/// A streaming call's responses as grpc-gateway writes them: one JSON object per line,
/// `{"result": ...}`, or `{"error": ...}` for the failure that ends the stream.
fn stream_response<Resp: Serialize + Send + 'static>(
    responses: impl futures::Stream<Item = Result<Resp, Status>> + Send + 'static,
) -> Response {
    use futures::StreamExt as _;
    let lines = responses.map(|reply| {
        // Written by hand around the response, so that its fields keep their order.
        let (wrapper, inner) = match reply {
            Ok(response) => ("result", serde_json::to_vec(&response)),
            Err(status) => ("error", serde_json::to_vec(&errors::http_body(&status))),
        };
        let mut bytes = format!("{{\"{wrapper}\":").into_bytes();
        bytes.extend(inner.expect("responses serialize"));
        bytes.extend_from_slice(b"}\n");
        Ok::<_, std::convert::Infallible>(Bytes::from(bytes))
    });
    ([(header::CONTENT_TYPE, "application/json")], axum::body::Body::from_stream(lines)).into_response()
}

fn stream_error(status: Status) -> Response {
    (errors::http_status(status.code()), axum::Json(errors::http_body(&status))).into_response()
}

/// `/v3/watch`: the body's requests (usually one create request); events stream back
/// until the client disconnects, as etcd's watch outlives the end of the request body.
async fn watch(State(api): State<Api>, headers: http::HeaderMap, body: Bytes) -> Response {
    let requests = match stream_requests::<WatchRequest>(&body) {
        Ok(requests) => requests,
        Err(status) => return stream_error(status),
    };
    let credentials = Credentials::from_headers(&headers);
    if let Err(status) = api.admit(&WatchRequest::default(), &credentials) {
        return stream_error(status);
    }
    let responses = api.watch_stream(futures::stream::iter(requests.into_iter().map(Ok)), Some(credentials));
    stream_response(tokio_stream::wrappers::ReceiverStream::new(responses))
}

/// `/v3/election/observe`: the election's leaders, as lines of JSON, until the client goes.
async fn observe(State(api): State<Api>, headers: http::HeaderMap, body: Bytes) -> Response {
    let request = match stream_requests::<LeaderRequest>(&body) {
        Ok(mut requests) if requests.len() == 1 => requests.remove(0),
        Ok(_) => return stream_error(Status::invalid_argument("observe takes one request")),
        Err(status) => return stream_error(status),
    };
    if let Err(status) = api.admit(&request, &Credentials::from_headers(&headers)) {
        return stream_error(status);
    }
    stream_response(tokio_stream::wrappers::ReceiverStream::new(api.observe_stream(request.name)))
}

/// `/v3/lease/keepalive`: one renewal per request in the body.
async fn keep_alive(State(api): State<Api>, headers: http::HeaderMap, body: Bytes) -> Response {
    let requests = match stream_requests::<LeaseKeepAliveRequest>(&body) {
        Ok(requests) => requests,
        Err(status) => return stream_error(status),
    };
    if let Err(status) = api.admit(&LeaseKeepAliveRequest::default(), &Credentials::from_headers(&headers)) {
        return stream_error(status);
    }
    stream_response(api.keep_alive_stream(futures::stream::iter(requests.into_iter().map(Ok))))
}

/// Requests no route matches: gRPC clients get `Unimplemented` naming the method (so that
/// etcd clients calling a service synod does not serve yet get a clear answer), everyone
/// else a 404 as etcd's HTTP mux gives.
pub async fn fallback(request: http::Request<axum::body::Body>) -> Response {
    let is_grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if is_grpc {
        let status = Status::unimplemented(format!("synod does not serve {} yet", request.uri().path()));
        return status.into_http::<axum::body::Body>().into_response();
    }
    (StatusCode::NOT_FOUND, "404 page not found\n").into_response()
}
