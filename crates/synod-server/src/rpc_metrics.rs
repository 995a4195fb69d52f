//! The gRPC series etcd exports through go-grpc-prometheus, recorded by a layer around the
//! client port's gRPC services, and the peer port's traffic counted from the serving side.
//!
//! Every call of a served method counts once in `grpc_server_started_total` when it arrives
//! and once in `grpc_server_handled_total` when its status is sent (or when the client
//! leaves first: `Canceled`), labelled by `grpc_type` (unary, client_stream, server_stream,
//! bidi_stream), `grpc_service`, `grpc_method` and, when handled, `grpc_code` as grpc-go
//! spells it. Streams count their messages both ways; `--metrics=extensive` adds the
//! handling-time histogram. Byte counts are the gRPC frames' bytes (a message and its 5-byte
//! prefix), which is what etcd's client byte counters count too.

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use futures::future::BoxFuture;
use http::{Request, Response};
use synod_api::body::{BodyWatcher, MessageCounter, WatchedBody};
use tokio::time::Instant;

use crate::metrics::{Labels, Metrics};

/// The methods synod serves, by service, with their streaming kinds; every other path is
/// not counted, as go-grpc-prometheus counts only registered methods, so a client cannot
/// make up label values.
const METHODS: &[(&str, &[(&str, &str)])] = &[
    (
        "etcdserverpb.KV",
        &[("Range", UNARY), ("Put", UNARY), ("DeleteRange", UNARY), ("Txn", UNARY), ("Compact", UNARY)],
    ),
    ("etcdserverpb.Watch", &[("Watch", BIDI)]),
    (
        "etcdserverpb.Lease",
        &[
            ("LeaseGrant", UNARY),
            ("LeaseRevoke", UNARY),
            ("LeaseKeepAlive", BIDI),
            ("LeaseTimeToLive", UNARY),
            ("LeaseLeases", UNARY),
        ],
    ),
    (
        "etcdserverpb.Cluster",
        &[
            ("MemberAdd", UNARY),
            ("MemberRemove", UNARY),
            ("MemberUpdate", UNARY),
            ("MemberList", UNARY),
            ("MemberPromote", UNARY),
        ],
    ),
    (
        "etcdserverpb.Maintenance",
        &[
            ("Alarm", UNARY),
            ("Status", UNARY),
            ("Defragment", UNARY),
            ("Hash", UNARY),
            ("HashKV", UNARY),
            ("Snapshot", SERVER_STREAM),
            ("MoveLeader", UNARY),
            ("Downgrade", UNARY),
        ],
    ),
    (
        "etcdserverpb.Auth",
        &[
            ("AuthEnable", UNARY),
            ("AuthDisable", UNARY),
            ("AuthStatus", UNARY),
            ("Authenticate", UNARY),
            ("UserAdd", UNARY),
            ("UserGet", UNARY),
            ("UserList", UNARY),
            ("UserDelete", UNARY),
            ("UserChangePassword", UNARY),
            ("UserGrantRole", UNARY),
            ("UserRevokeRole", UNARY),
            ("RoleAdd", UNARY),
            ("RoleGet", UNARY),
            ("RoleList", UNARY),
            ("RoleDelete", UNARY),
            ("RoleGrantPermission", UNARY),
            ("RoleRevokePermission", UNARY),
        ],
    ),
    ("v3lockpb.Lock", &[("Lock", UNARY), ("Unlock", UNARY)]),
    (
        "v3electionpb.Election",
        &[
            ("Campaign", UNARY),
            ("Proclaim", UNARY),
            ("Leader", UNARY),
            ("Observe", SERVER_STREAM),
            ("Resign", UNARY),
        ],
    ),
    ("synod.v1.Counter", &[("Add", UNARY), ("Get", UNARY)]),
    ("grpc.health.v1.Health", &[("Check", UNARY), ("Watch", SERVER_STREAM)]),
];

const UNARY: &str = "unary";
const BIDI: &str = "bidi_stream";
const SERVER_STREAM: &str = "server_stream";

/// grpc-go's name for a status code (`codes.Code.String()`), which the `grpc_code` label
/// carries and etcd's alerts match on.
pub fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "Canceled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "Unknown",
    }
}

/// `(grpc_type, grpc_service, grpc_method)` of a request path, for a served method.
fn method_of(path: &str) -> Option<(&'static str, &'static str, &'static str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let (service, methods) = METHODS.iter().find(|(name, _)| *name == service)?;
    let (method, kind) = methods.iter().find(|(name, _)| *name == method)?;
    Some((kind, service, method))
}

/// The layer that records the gRPC series for the services it wraps.
#[derive(Clone)]
pub struct RpcMetricsLayer {
    pub metrics: Arc<Metrics>,
}

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics { inner, metrics: self.metrics.clone() }
    }
}

#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> tower::Service<Request<Body>> for RpcMetrics<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let Some((kind, service, method)) = method_of(request.uri().path()) else {
            return Box::pin(self.inner.call(request));
        };
        let metrics = self.metrics.clone();
        let labels: Labels = vec![
            ("grpc_type", kind.to_string()),
            ("grpc_service", service.to_string()),
            ("grpc_method", method.to_string()),
        ];
        metrics.grpc_started.get_or_create(&labels).inc();
        let received = Received {
            metrics: metrics.clone(),
            labels: labels.clone(),
            messages: MessageCounter::default(),
        };
        let request = request.map(|body| Body::new(WatchedBody::new(body, received)));
        let future = self.inner.call(request);
        // Until the reply starts, a client that leaves (its deadline, a cancelled wait for a
        // lock) drops this future: `pending` then counts the call as Canceled.
        let mut pending = Sent {
            metrics,
            labels,
            messages: MessageCounter::default(),
            code: None,
            started: Instant::now(),
        };
        Box::pin(async move {
            let response = future.await?;
            // A call refused before any reply (most errors) carries its status in the headers.
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok());
            let mut sent = pending.take();
            sent.code = code;
            Ok(response.map(|body| Body::new(WatchedBody::new(body, sent))))
        })
    }
}

/// Counts a request's bytes and messages.
struct Received {
    metrics: Arc<Metrics>,
    labels: Labels,
    messages: MessageCounter,
}

impl BodyWatcher for Received {
    fn data(&mut self, chunk: &[u8]) {
        self.metrics.client_grpc_received_bytes.inc_by(chunk.len() as u64);
        let messages = self.messages.feed(chunk);
        if messages > 0 {
            self.metrics.grpc_msg_received.get_or_create(&self.labels).inc_by(messages);
        }
    }

    fn end(&mut self) {}
}

/// Counts a response's bytes and messages, and the call as handled once its status is
/// sent or the client is gone, before any reply too ([`Sent::take`]). Empty labels mean
/// counted already.
struct Sent {
    metrics: Arc<Metrics>,
    labels: Labels,
    messages: MessageCounter,
    code: Option<i32>,
    started: Instant,
}

impl Sent {
    /// Moves the call's accounting out, to the response body; what stays behind counts
    /// nothing when dropped.
    fn take(&mut self) -> Sent {
        Sent {
            metrics: self.metrics.clone(),
            labels: std::mem::take(&mut self.labels),
            messages: MessageCounter::default(),
            code: None,
            started: self.started,
        }
    }
}

impl Drop for Sent {
    /// A call dropped before its reply began: the client went away.
    fn drop(&mut self) {
        BodyWatcher::end(self);
    }
}

impl BodyWatcher for Sent {
    fn data(&mut self, chunk: &[u8]) {
        self.metrics.client_grpc_sent_bytes.inc_by(chunk.len() as u64);
        let messages = self.messages.feed(chunk);
        if messages > 0 {
            self.metrics.grpc_msg_sent.get_or_create(&self.labels).inc_by(messages);
        }
    }

    fn trailers(&mut self, trailers: &http::HeaderMap) {
        if let Some(code) =
            trailers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
        {
            self.code = Some(code);
        }
    }

    fn end(&mut self) {
        if self.labels.is_empty() {
            return;
        }
        // No status sent: the client went away (or the connection broke) before the end.
        let code = code_name(self.code.unwrap_or(1));
        let mut labels = self.labels.clone();
        labels.push(("grpc_code", code.to_string()));
        self.metrics.grpc_handled.get_or_create(&labels).inc();
        if let Some(handling) = &self.metrics.grpc_handling_seconds {
            handling.get_or_create(&self.labels).observe(self.started.elapsed().as_secs_f64());
        }
        // Counted once: a body's end and its drop both come here.
        self.labels.clear();
    }
}

/// Counts the peer port's traffic from the serving side: a request's bytes as received
/// from its sender, the answer's as sent to it (the sender names itself in a header; only
/// members are counted, so nobody can make up label values).
#[derive(Clone)]
pub struct PeerBytesLayer {
    pub metrics: Arc<Metrics>,
    pub is_member: Arc<dyn Fn(u64) -> bool + Send + Sync>,
}

impl<S> tower::Layer<S> for PeerBytesLayer {
    type Service = PeerBytes<S>;

    fn layer(&self, inner: S) -> PeerBytes<S> {
        PeerBytes { inner, metrics: self.metrics.clone(), is_member: self.is_member.clone() }
    }
}

#[derive(Clone)]
pub struct PeerBytes<S> {
    inner: S,
    metrics: Arc<Metrics>,
    is_member: Arc<dyn Fn(u64) -> bool + Send + Sync>,
}

impl<S> tower::Service<Request<Body>> for PeerBytes<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let sender = request
            .headers()
            .get(synod_consensus::FROM_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .filter(|sender| (self.is_member)(*sender));
        let Some(sender) = sender else {
            return Box::pin(self.inner.call(request));
        };
        let received = self.metrics.peer_received_bytes.get_or_create(&Metrics::peer("From", sender)).clone();
        let sent = self.metrics.peer_sent_bytes.get_or_create(&Metrics::peer("To", sender)).clone();
        let request = request.map(|body| Body::new(WatchedBody::new(body, Bytes(received))));
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            Ok(response.map(|body| Body::new(WatchedBody::new(body, Bytes(sent)))))
        })
    }
}

/// Adds a body's bytes to a counter.
struct Bytes(prometheus_client::metrics::counter::Counter);

impl BodyWatcher for Bytes {
    fn data(&mut self, chunk: &[u8]) {
        self.0.inc_by(chunk.len() as u64);
    }

    fn end(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paths name served methods with their streaming kind; others are not counted.
    #[test]
    fn methods_and_kinds() {
        assert_eq!(method_of("/etcdserverpb.KV/Range"), Some(("unary", "etcdserverpb.KV", "Range")));
        assert_eq!(method_of("/etcdserverpb.KV/MadeUp"), None, "a made-up method would be a new label");
        assert_eq!(method_of("/etcdserverpb.Watch/Watch").map(|m| m.0), Some("bidi_stream"));
        assert_eq!(method_of("/etcdserverpb.Lease/LeaseKeepAlive").map(|m| m.0), Some("bidi_stream"));
        assert_eq!(method_of("/etcdserverpb.Lease/LeaseGrant").map(|m| m.0), Some("unary"));
        assert_eq!(method_of("/etcdserverpb.Maintenance/Snapshot").map(|m| m.0), Some("server_stream"));
        assert_eq!(method_of("/v3electionpb.Election/Observe").map(|m| m.0), Some("server_stream"));
        assert_eq!(method_of("/etcdserverpb.Nope/Range"), None);
        assert_eq!(method_of("/v3/kv/range"), None);
        assert_eq!(method_of("/metrics"), None);
    }

    /// grpc-go's spellings, not tonic's.
    #[test]
    fn codes_as_grpc_go_spells_them() {
        assert_eq!(code_name(tonic::Code::Ok as i32), "OK");
        assert_eq!(code_name(tonic::Code::Cancelled as i32), "Canceled");
        assert_eq!(code_name(tonic::Code::DeadlineExceeded as i32), "DeadlineExceeded");
        assert_eq!(code_name(tonic::Code::Unauthenticated as i32), "Unauthenticated");
        assert_eq!(code_name(99), "Unknown");
    }
}
