//! Limits and bad input: oversized requests, the space quota, malformed protobuf and JSON,
//! and bad flags all get a clear error, and the member keeps serving.

mod support;

use std::io::{Read, Write};
use std::process::Command;

use bytes::{Buf, BufMut};
use support::{Server, kv};
use synod_api::etcdserverpb::alarm_request::AlarmAction;
use synod_api::etcdserverpb::maintenance_client::MaintenanceClient;
use synod_api::etcdserverpb::{
    AlarmRequest, AlarmType, CompactionRequest, DefragmentRequest, DeleteRangeRequest, PutRequest,
    RangeRequest, RequestOp, StatusRequest, TxnRequest, request_op,
};
use tonic::Code;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

fn put(key: &str, value_bytes: usize) -> PutRequest {
    PutRequest { key: key.into(), value: vec![b'v'; value_bytes], ..Default::default() }
}

/// A request over the 1.5 MiB limit gets etcd's "request is too large"; one beyond the
/// transport limit fails too; the member serves the next request as before.
#[test]
fn oversized_requests_are_refused_and_the_member_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let synod = Server::synod(dir.path());
    tokio::runtime::Runtime::new().expect("runtime").block_on(async {
        let mut client = kv(&synod).await;
        let error = client.put(put("big", 1_600_000)).await.expect_err("1.6 MB put must fail");
        assert_eq!(error.code(), Code::InvalidArgument);
        assert_eq!(error.message(), "etcdserver: request is too large");
        let error = client.put(put("huge", 3_000_000)).await.expect_err("3 MB put must fail");
        assert_ne!(error.code(), Code::Ok);
        let mut client = kv(&synod).await;
        client.put(put("small", 100)).await.expect("a normal put after the oversized ones");
        let response =
            client.range(RangeRequest { key: b"small".to_vec(), ..Default::default() }).await.expect("get");
        assert_eq!(response.into_inner().count, 1);
        let response =
            client.range(RangeRequest { key: b"big".to_vec(), ..Default::default() }).await.expect("get");
        assert_eq!(response.into_inner().count, 0, "a refused put must not be applied");
    });
}

/// `--max-request-bytes` moves the limit.
#[test]
fn max_request_bytes_flag_sets_the_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let synod = Server::synod_with(dir.path(), &["--max-request-bytes", "4096"]);
    tokio::runtime::Runtime::new().expect("runtime").block_on(async {
        let mut client = kv(&synod).await;
        client.put(put("fits", 3000)).await.expect("a put under the limit");
        let error = client.put(put("too-big", 5000)).await.expect_err("a put over the limit");
        assert_eq!(error.message(), "etcdserver: request is too large");
    });
}

fn http(address: &str, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("send head");
    // The server may answer and close before reading a body it refuses.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).to_string();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status line");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// Writes past `--quota-backend-bytes` raise the NOSPACE alarm and fail with etcd's error
/// while reads and deletes still work; compaction, defragmentation and disarming the alarm
/// bring writes back.
#[test]
fn quota_refuses_writes_but_not_reads_or_deletes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let quota = 2 * 1024 * 1024;
    let synod = Server::synod_with(dir.path(), &["--quota-backend-bytes", &quota.to_string()]);
    tokio::runtime::Runtime::new().expect("runtime").block_on(async {
        let mut client = kv(&synod).await;
        let mut maintenance = MaintenanceClient::connect(synod.endpoint()).await.expect("connect");
        let mut refused = None;
        for i in 0..1000 {
            match client.put(put(&format!("key{i:04}"), 32 * 1024)).await {
                Ok(_) => {}
                Err(status) => {
                    refused = Some(status);
                    break;
                }
            }
        }
        let refused = refused.expect("writes past the quota must be refused");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert_eq!(refused.message(), "etcdserver: mvcc: database space exceeded");

        // Maintenance mode: no more data in, reads and deletes work.
        let error = client.put(put("tiny", 1)).await.expect_err("even a tiny put is refused");
        assert_eq!(error.message(), "etcdserver: mvcc: database space exceeded");
        let txn = TxnRequest {
            compare: vec![],
            success: vec![RequestOp { request: Some(request_op::Request::RequestPut(put("tiny", 1))) }],
            failure: vec![],
        };
        assert_eq!(
            client.txn(txn).await.expect_err("txn put").message(),
            "etcdserver: mvcc: database space exceeded"
        );
        let all = RangeRequest {
            key: b"key".to_vec(),
            range_end: b"kez".to_vec(),
            count_only: true,
            ..Default::default()
        };
        assert!(client.range(all.clone()).await.expect("reads still work").into_inner().count > 0);
        let alarms = maintenance
            .alarm(AlarmRequest { action: AlarmAction::Get as i32, ..Default::default() })
            .await
            .expect("alarm list")
            .into_inner()
            .alarms;
        assert_eq!(alarms.len(), 1);
        assert_eq!(alarms[0].alarm, AlarmType::Nospace as i32);
        let status = maintenance.status(StatusRequest {}).await.expect("status").into_inner();
        assert!(status.errors.iter().any(|e| e.contains("NOSPACE")), "{:?}", status.errors);
        let (code, body) = http(&synod.address(), "GET", "/health", b"");
        assert_eq!((code, body.contains("ALARM NOSPACE")), (503, true), "{body}");
        let (code, _) = http(&synod.address(), "GET", "/health?exclude=NOSPACE", b"");
        assert_eq!(code, 200);

        let deleted = client
            .delete_range(DeleteRangeRequest {
                key: b"key".to_vec(),
                range_end: b"kez".to_vec(),
                ..Default::default()
            })
            .await
            .expect("deletes still work")
            .into_inner();
        assert!(deleted.deleted > 0);

        // The operator's way out: compact, defragment, disarm.
        let revision = deleted.header.expect("header").revision;
        client.compact(CompactionRequest { revision, physical: true }).await.expect("compact");
        maintenance.defragment(DefragmentRequest {}).await.expect("defragment");
        let status = maintenance.status(StatusRequest {}).await.expect("status").into_inner();
        assert!(status.db_size < quota, "defragment left {} bytes, quota {quota}", status.db_size);
        maintenance
            .alarm(AlarmRequest {
                action: AlarmAction::Deactivate as i32,
                member_id: alarms[0].member_id,
                alarm: AlarmType::Nospace as i32,
            })
            .await
            .expect("disarm");
        client.put(put("after", 100)).await.expect("writes work again");
        assert_eq!(http(&synod.address(), "GET", "/health", b"").0, 200);
    });
}

/// Sends bytes as a gRPC message as they are, to test what the server does with them.
#[derive(Clone, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// Malformed protobuf and malformed JSON get InvalidArgument (HTTP 400 on the gateway),
/// an oversized JSON body is refused, and the member serves on.
#[test]
fn malformed_requests_get_invalid_argument() {
    let dir = tempfile::tempdir().expect("tempdir");
    let synod = Server::synod(dir.path());
    tokio::runtime::Runtime::new().expect("runtime").block_on(async {
        let channel = tonic::transport::Channel::from_shared(synod.endpoint())
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        let garbage: &[&[u8]] = &[&[0xff, 0xff, 0xff, 0xff], &[0x0a, 0x80], &[0x12, 0x05, 0x01]];
        for bytes in garbage {
            for method in ["/etcdserverpb.KV/Put", "/etcdserverpb.KV/Range", "/etcdserverpb.KV/Txn"] {
                let mut grpc = tonic::client::Grpc::new(channel.clone());
                grpc.ready().await.expect("ready");
                let path = http::uri::PathAndQuery::from_static(method);
                let error = grpc
                    .unary(tonic::Request::new(bytes.to_vec()), path, Raw)
                    .await
                    .expect_err("garbage must fail");
                assert_eq!(error.code(), Code::InvalidArgument, "{method} {bytes:?}: {error:?}");
            }
        }
        kv(&synod).await.put(put("still-serving", 1)).await.expect("put after garbage");
    });
    for body in [&b"{"[..], b"[1,2]", b"{\"key\": 5}", b"\xff\xfe", b"{\"limit\":\"many\"}"] {
        let (status, text) = http(&synod.address(), "POST", "/v3/kv/range", body);
        assert_eq!(status, 400, "{body:?}: {text}");
        let error: serde_json::Value = serde_json::from_str(&text).expect("error body is JSON");
        assert_eq!(error["code"], 3, "{text}");
    }
    let (status, _) = http(&synod.address(), "POST", "/v3/kv/put", &vec![b' '; 4 * 1024 * 1024]);
    assert_eq!(status, 413, "a body past the limit is refused");
    assert_eq!(http(&synod.address(), "GET", "/health", b"").0, 200);
}

fn synod_exit(args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_synod")).args(args).output().expect("run synod");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into(),
        String::from_utf8_lossy(&output.stderr).into(),
    )
}

/// `--help` lists every etcd flag synod takes, with its default; an unknown flag, a
/// malformed URL, an https URL without a certificate and an unsupported token type each
/// exit with status 2 and name the culprit.
#[test]
fn flags_are_documented_and_checked() {
    let (code, help, _) = synod_exit(&["--help"]);
    assert_eq!(code, Some(0));
    for flag in [
        "--name",
        "--data-dir",
        "--listen-client-urls",
        "--advertise-client-urls",
        "--listen-peer-urls",
        "--initial-advertise-peer-urls",
        "--initial-cluster",
        "--initial-cluster-state",
        "--initial-cluster-token",
        "--cert-file",
        "--key-file",
        "--trusted-ca-file",
        "--client-cert-auth",
        "--peer-cert-file",
        "--peer-key-file",
        "--peer-trusted-ca-file",
        "--peer-client-cert-auth",
        "--max-request-bytes",
        "--quota-backend-bytes",
        "--auto-compaction-mode",
        "--auto-compaction-retention",
        "--heartbeat-interval",
        "--election-timeout",
        "--snapshot-count",
        "--log-level",
    ] {
        assert!(help.contains(flag), "--help does not list {flag}:\n{help}");
    }
    for default in [
        "[default: default]",
        "[default: http://localhost:2379]",
        "[default: http://localhost:2380]",
        "[default: 1572864]",
        "[default: etcd-cluster]",
        "[default: 100]",
        "[default: 1000]",
        "[default: 100000]",
    ] {
        assert!(help.contains(default), "--help does not show {default}");
    }
    let (code, _, stderr) = synod_exit(&["--no-such-flag"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
    let (code, _, stderr) = synod_exit(&["--listen-client-urls", "127.0.0.1:2379"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("127.0.0.1:2379"), "{stderr}");
    let (code, _, stderr) = synod_exit(&["--listen-peer-urls", "http://[::1"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--listen-peer-urls"), "{stderr}");
    let (code, _, stderr) = synod_exit(&["--listen-client-urls", "https://127.0.0.1:1"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--cert-file, --key-file"), "{stderr}");
    let (code, _, stderr) = synod_exit(&["--auth-token", "jwt"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--auth-token"), "{stderr}");
    let (code, _, stderr) = synod_exit(&["--initial-cluster", "other=http://127.0.0.1:1"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--initial-cluster"), "{stderr}");
}

/// `/metrics` serves Prometheus text with etcd's metric names, `/version` etcd's shape; an
/// unknown path is a 404, and a gRPC call to a service synod does not serve gets
/// `Unimplemented` naming it.
#[test]
fn plain_http_endpoints_and_unknown_routes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let synod = Server::synod(dir.path());
    tokio::runtime::Runtime::new().expect("runtime").block_on(async {
        kv(&synod).await.put(put("m", 1)).await.expect("put");
    });
    let (status, metrics) = http(&synod.address(), "GET", "/metrics", b"");
    assert_eq!(status, 200);
    for name in [
        "etcd_server_has_leader 1",
        "etcd_server_proposals_committed_total",
        "etcd_disk_wal_fsync_duration_seconds_bucket",
        "grpc_server_handled_total{grpc_type=\"unary\",grpc_service=\"etcdserverpb.KV\",grpc_method=\"Put\",grpc_code=\"OK\"} 1",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
    let (status, version) = http(&synod.address(), "GET", "/version", b"");
    assert_eq!(status, 200);
    let version: serde_json::Value = serde_json::from_str(&version).expect("JSON");
    assert!(version["etcdserver"].as_str().is_some_and(|v| v.starts_with("3.5")), "{version}");
    assert_eq!(http(&synod.address(), "GET", "/no/such/page", b"").0, 404);
    tokio::runtime::Runtime::new().expect("runtime").block_on(async {
        let channel = tonic::transport::Channel::from_shared(synod.endpoint())
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("ready");
        let path = http::uri::PathAndQuery::from_static("/etcdserverpb.Unknown/Method");
        let error = grpc.unary(tonic::Request::new(Vec::new()), path, Raw).await.expect_err("not served");
        assert_eq!(error.code(), Code::Unimplemented);
        assert!(error.message().contains("etcdserverpb.Unknown/Method"), "{}", error.message());
    });
}

/// A Watch stream holds at most `WATCHERS_PER_STREAM_MAX` watchers: the next create is
/// refused with a reason that says so, and the stream and its watchers go on working.
#[test]
fn a_watch_stream_holds_a_bounded_number_of_watchers() {
    use synod_api::etcdserverpb::watch_client::WatchClient;
    use synod_api::etcdserverpb::{WatchCreateRequest, WatchRequest, watch_request};
    let dir = tempfile::tempdir().expect("tempdir");
    let synod = Server::synod(dir.path());
    tokio::runtime::Runtime::new().expect("runtime").block_on(async {
        let max = synod_base::limits::WATCHERS_PER_STREAM_MAX;
        let create = |key: &str| WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(WatchCreateRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            })),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let feeder = tokio::spawn(async move {
            for i in 0..=max {
                tx.send(create(&format!("w{i}"))).await.expect("send");
            }
            tx
        });
        let channel = synod.channel().await;
        let mut responses = WatchClient::new(channel)
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("watch")
            .into_inner();
        let mut created = 0;
        let refused = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            loop {
                let response = responses.message().await.expect("response").expect("stream open");
                if response.canceled {
                    return response;
                }
                created += 1;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no create was refused; {created} watchers were made"));
        assert_eq!(created, max);
        assert!(
            refused.cancel_reason.contains(&format!("at most {max} watchers")),
            "{}",
            refused.cancel_reason
        );
        // The watchers it holds still see events.
        let _tx = feeder.await.expect("feeder");
        kv(&synod).await.put(put("w7", 1)).await.expect("put");
        let event = responses.message().await.expect("response").expect("stream open");
        assert_eq!(event.events[0].kv.as_ref().expect("kv").key, b"w7");
    });
}
