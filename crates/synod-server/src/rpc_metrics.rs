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

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use axum::body::Body;
use futures::future::BoxFuture;
use http::{Request, Response};
use synod_api::body::{BodyWatcher, MessageCounter, WatchedBody};
use tokio::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

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

/// The position of a request path's method in [`METHODS`], flattened, if synod serves it.
fn method_of(path: &str) -> Option<usize> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let mut index = 0;
    for (name, methods) in METHODS {
        if *name == service {
            return methods.iter().position(|(m, _)| *m == method).map(|at| index + at);
        }
        index += methods.len();
    }
    None
}

/// `(grpc_type, grpc_service, grpc_method)` of the method at a flattened position.
fn method_at(index: usize) -> (&'static str, &'static str, &'static str) {
    let mut index = index;
    for (service, methods) in METHODS {
        if let Some((method, kind)) = methods.get(index) {
            return (kind, service, method);
        }
        index -= methods.len();
    }
    unreachable!("a position method_of gave")
}

/// grpc-go's codes, 0 to 16.
const CODES: usize = 17;

/// One served method's series, made the first time it is called, so that a call builds no
/// labels and looks nothing up by name.
struct RpcSeries {
    labels: Labels,
    started: Counter,
    msg_received: Counter,
    msg_sent: Counter,
    handling: Option<Histogram>,
    handled: [OnceLock<Counter>; CODES],
}

impl RpcSeries {
    fn new(metrics: &Metrics, index: usize) -> RpcSeries {
        let (kind, service, method) = method_at(index);
        let labels: Labels = vec![
            ("grpc_type", kind.to_string()),
            ("grpc_service", service.to_string()),
            ("grpc_method", method.to_string()),
        ];
        RpcSeries {
            started: metrics.grpc_started.get_or_create(&labels).clone(),
            msg_received: metrics.grpc_msg_received.get_or_create(&labels).clone(),
            msg_sent: metrics.grpc_msg_sent.get_or_create(&labels).clone(),
            handling: metrics.grpc_handling_seconds.as_ref().map(|h| h.get_or_create(&labels).clone()),
            handled: std::array::from_fn(|_| OnceLock::new()),
            labels,
        }
    }

    fn handled(&self, metrics: &Metrics, code: i32) -> &Counter {
        let code = usize::try_from(code).ok().filter(|c| *c < CODES).unwrap_or(2);
        self.handled[code].get_or_init(|| {
            let mut labels = self.labels.clone();
            labels.push(("grpc_code", code_name(code as i32).to_string()));
            metrics.grpc_handled.get_or_create(&labels).clone()
        })
    }
}

/// The layer that records the gRPC series for the services it wraps.
#[derive(Clone)]
pub struct RpcMetricsLayer {
    metrics: Arc<Metrics>,
    series: Arc<Vec<OnceLock<Arc<RpcSeries>>>>,
}

impl RpcMetricsLayer {
    pub fn new(metrics: Arc<Metrics>) -> RpcMetricsLayer {
        let methods = METHODS.iter().map(|(_, methods)| methods.len()).sum();
        RpcMetricsLayer { metrics, series: Arc::new((0..methods).map(|_| OnceLock::new()).collect()) }
    }
}

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics { inner, layer: self.clone() }
    }
}

#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    layer: RpcMetricsLayer,
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
        let Some(index) = method_of(request.uri().path()) else {
            return Box::pin(self.inner.call(request));
        };
        let metrics = self.layer.metrics.clone();
        let series =
            self.layer.series[index].get_or_init(|| Arc::new(RpcSeries::new(&metrics, index))).clone();
        series.started.inc();
        let received = Received {
            metrics: metrics.clone(),
            series: series.clone(),
            messages: MessageCounter::default(),
        };
        let request = request.map(|body| Body::new(WatchedBody::new(body, received)));
        let future = self.inner.call(request);
        // Until the reply starts, a client that leaves (its deadline, a cancelled wait for a
        // lock) drops this future: `pending` then counts the call as Canceled.
        let mut pending = Sent {
            metrics,
            series: Some(series),
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
    series: Arc<RpcSeries>,
    messages: MessageCounter,
}

impl BodyWatcher for Received {
    fn data(&mut self, chunk: &[u8]) {
        self.metrics.client_grpc_received_bytes.inc_by(chunk.len() as u64);
        let messages = self.messages.feed(chunk);
        if messages > 0 {
            self.series.msg_received.inc_by(messages);
        }
    }

    fn end(&mut self) {}
}

/// Counts a response's bytes and messages, and the call as handled once its status is
/// sent or the client is gone, before any reply too ([`Sent::take`]). No series means
/// counted already.
struct Sent {
    metrics: Arc<Metrics>,
    series: Option<Arc<RpcSeries>>,
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
            series: self.series.take(),
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
        if messages > 0
            && let Some(series) = &self.series
        {
            series.msg_sent.inc_by(messages);
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
        // Counted once: a body's end and its drop both come here.
        let Some(series) = self.series.take() else { return };
        // No status sent: the client went away (or the connection broke) before the end.
        series.handled(&self.metrics, self.code.unwrap_or(1)).inc();
        if let Some(handling) = &series.handling {
            handling.observe(self.started.elapsed().as_secs_f64());
        }
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
        let series = self.metrics.peer_series(sender);
        let (received, sent) = (series.received.clone(), series.sent.clone());
        let request = request.map(|body| Body::new(WatchedBody::new(body, Bytes(received))));
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            Ok(response.map(|body| Body::new(WatchedBody::new(body, Bytes(sent)))))
        })
    }
}

/// Adds a body's bytes to a counter.
struct Bytes(Counter);

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
        let kind = |path: &str| method_of(path).map(method_at);
        assert_eq!(kind("/etcdserverpb.KV/Range"), Some(("unary", "etcdserverpb.KV", "Range")));
        assert_eq!(kind("/etcdserverpb.KV/MadeUp"), None, "a made-up method would be a new label");
        assert_eq!(kind("/etcdserverpb.Watch/Watch").map(|m| m.0), Some("bidi_stream"));
        assert_eq!(kind("/etcdserverpb.Lease/LeaseKeepAlive").map(|m| m.0), Some("bidi_stream"));
        assert_eq!(kind("/etcdserverpb.Lease/LeaseGrant").map(|m| m.0), Some("unary"));
        assert_eq!(kind("/etcdserverpb.Maintenance/Snapshot").map(|m| m.0), Some("server_stream"));
        assert_eq!(kind("/v3electionpb.Election/Observe").map(|m| m.0), Some("server_stream"));
        assert_eq!(
            kind("/grpc.health.v1.Health/Watch"),
            Some(("server_stream", "grpc.health.v1.Health", "Watch"))
        );
        assert_eq!(kind("/etcdserverpb.Nope/Range"), None);
        assert_eq!(kind("/v3/kv/range"), None);
        assert_eq!(kind("/metrics"), None);
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
