//! synod against a real etcd: the same requests get the same answers.
//!
//! Each test starts a fresh etcd (Debian's `etcd-server`) and a fresh synod and sends both
//! the same requests: random gRPC operations, an etcdctl session, and JSON gateway calls.
//! Responses are compared field by field after removing what legitimately differs between
//! two clusters: member and cluster ids and the raft term.

mod support;

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use support::{Server, interop_program, kv, normalize};
use synod_api::etcdserverpb::compare::TargetUnion;
use synod_api::etcdserverpb::kv_client::KvClient;
use synod_api::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
    request_op,
};
use tonic::transport::Channel;

/// A response or error as comparable text.
fn outcome<T: serde::Serialize>(result: Result<tonic::Response<T>, tonic::Status>) -> String {
    match result {
        Ok(response) => {
            let mut value = serde_json::to_value(response.get_ref()).expect("responses serialize");
            normalize(&mut value);
            value.to_string()
        }
        Err(status) => format!("error {:?}: {}", status.code(), status.message()),
    }
}

#[derive(Clone, Debug)]
enum Op {
    Range(RangeRequest),
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
}

async fn run(client: &mut KvClient<Channel>, op: &Op) -> String {
    match op.clone() {
        Op::Range(r) => outcome(client.range(r).await),
        Op::Put(r) => outcome(client.put(r).await),
        Op::Delete(r) => outcome(client.delete_range(r).await),
        Op::Txn(r) => outcome(client.txn(r).await),
        Op::Compact(r) => outcome(client.compact(r).await),
    }
}

/// Ten keys at most: etcd sorts equal values in an unspecified order beyond twelve.
const KEYS: &[&[u8]] = &[b"a", b"ab", b"abc", b"b", b"ba", b"c", b"cz", b"d", b"\x00", b"\xff\xff"];
const VALUES: &[&[u8]] = &[b"", b"0", b"1", b"10", b"x", b"zz"];

/// The key after every key with this prefix, as etcdctl's `--prefix` computes it.
fn prefix_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn ops_of(txn: &TxnRequest) -> impl Iterator<Item = &RequestOp> {
    txn.success.iter().chain(&txn.failure)
}

fn deletes_to_end(txn: &TxnRequest) -> bool {
    ops_of(txn).any(|op| match &op.request {
        Some(request_op::Request::RequestDeleteRange(d)) => d.range_end == [0],
        Some(request_op::Request::RequestTxn(nested)) => deletes_to_end(nested),
        _ => false,
    })
}

fn clear_ignore_flags(txn: &mut TxnRequest) {
    for op in txn.success.iter_mut().chain(txn.failure.iter_mut()) {
        match &mut op.request {
            Some(request_op::Request::RequestPut(p)) => {
                p.ignore_value = false;
                p.ignore_lease = false;
            }
            Some(request_op::Request::RequestTxn(nested)) => clear_ignore_flags(nested),
            _ => {}
        }
    }
}

struct Generator {
    rng: StdRng,
    /// Newest revision seen, to aim revisions near the interesting edges.
    revision: i64,
    compacted: i64,
}

impl Generator {
    fn key(&mut self) -> Vec<u8> {
        if self.rng.random_ratio(1, 60) {
            return Vec::new();
        }
        KEYS[self.rng.random_range(0..KEYS.len())].to_vec()
    }

    fn value(&mut self) -> Vec<u8> {
        VALUES[self.rng.random_range(0..VALUES.len())].to_vec()
    }

    fn range_end(&mut self, key: &[u8]) -> Vec<u8> {
        match self.rng.random_range(0..5) {
            0 | 1 => Vec::new(),
            2 => prefix_end(key),
            3 => vec![0],
            _ => KEYS[self.rng.random_range(0..KEYS.len())].to_vec(),
        }
    }

    fn revision(&mut self) -> i64 {
        match self.rng.random_range(0..6) {
            0..=2 => 0,
            3 => -1,
            _ => self.rng.random_range((self.compacted - 1).max(-2)..=self.revision + 1),
        }
    }

    fn range(&mut self) -> RangeRequest {
        let key = self.key();
        let filter = |g: &mut Generator| {
            if g.rng.random_ratio(1, 6) { g.rng.random_range(0..=g.revision + 1) } else { 0 }
        };
        RangeRequest {
            range_end: self.range_end(&key),
            key,
            limit: if self.rng.random_ratio(1, 3) { self.rng.random_range(-1..=4) } else { 0 },
            revision: self.revision(),
            sort_order: self.rng.random_range(0..=2),
            sort_target: if self.rng.random_ratio(1, 2) { self.rng.random_range(0..=4) } else { 0 },
            serializable: self.rng.random_ratio(1, 4),
            keys_only: self.rng.random_ratio(1, 5),
            count_only: self.rng.random_ratio(1, 8),
            min_mod_revision: filter(self),
            max_mod_revision: filter(self),
            min_create_revision: filter(self),
            max_create_revision: filter(self),
        }
    }

    fn put(&mut self) -> PutRequest {
        let ignore_value = self.rng.random_ratio(1, 12);
        let ignore_lease = self.rng.random_ratio(1, 12);
        PutRequest {
            key: self.key(),
            // A value with ignore_value is an error, and sometimes we want that error.
            value: if ignore_value && self.rng.random_ratio(3, 4) { Vec::new() } else { self.value() },
            lease: if self.rng.random_ratio(1, 15) { 0x1234 } else { 0 },
            prev_kv: self.rng.random_ratio(1, 3),
            ignore_value,
            ignore_lease,
        }
    }

    fn delete(&mut self) -> DeleteRangeRequest {
        let key = self.key();
        DeleteRangeRequest { range_end: self.range_end(&key), key, prev_kv: self.rng.random_ratio(1, 2) }
    }

    fn compare(&mut self) -> Compare {
        let target = self.rng.random_range(0..=4);
        let number = |g: &mut Generator| g.rng.random_range(0..=g.revision + 1);
        // Mostly the union matching the target; sometimes another, which etcd treats as 0.
        let union_kind = if self.rng.random_ratio(1, 10) { self.rng.random_range(0..=4) } else { target };
        let union = match union_kind {
            0 => TargetUnion::Version(self.rng.random_range(0..=3)),
            1 => TargetUnion::CreateRevision(number(self)),
            2 => TargetUnion::ModRevision(number(self)),
            3 => TargetUnion::Value(self.value()),
            _ => TargetUnion::Lease(if self.rng.random_ratio(1, 2) { 0 } else { 0x1234 }),
        };
        let key = self.key();
        Compare {
            result: self.rng.random_range(0..=3),
            target,
            range_end: if self.rng.random_ratio(1, 4) { self.range_end(&key) } else { Vec::new() },
            key,
            target_union: Some(union),
        }
    }

    fn txn(&mut self, depth: u32) -> TxnRequest {
        let compares = self.rng.random_range(0..=2);
        let mut txn = TxnRequest {
            compare: (0..compares).map(|_| self.compare()).collect(),
            success: self.ops(depth),
            failure: self.ops(depth),
        };
        // A delete to the end of the keyspace followed by a put that keeps the value or
        // lease of a key it removed makes etcd panic (and crash-loop on its log); synod
        // refuses such a txn (see docs/etcd-compat.md and the mvcc fixtures). Keep the two
        // apart so the comparison can go on.
        if depth == 0 && deletes_to_end(&txn) {
            clear_ignore_flags(&mut txn);
        }
        txn
    }

    fn ops(&mut self, depth: u32) -> Vec<RequestOp> {
        let count = self.rng.random_range(0..=3);
        (0..count)
            .map(|_| {
                let request = match self.rng.random_range(0..10) {
                    0..=3 => request_op::Request::RequestRange(self.range()),
                    4..=6 => request_op::Request::RequestPut(self.put()),
                    7 | 8 => request_op::Request::RequestDeleteRange(self.delete()),
                    _ if depth < 2 => request_op::Request::RequestTxn(self.txn(depth + 1)),
                    _ => request_op::Request::RequestRange(self.range()),
                };
                RequestOp { request: Some(request) }
            })
            .collect()
    }

    fn op(&mut self) -> Op {
        match self.rng.random_range(0..100) {
            0..=29 => Op::Range(self.range()),
            30..=59 => Op::Put(self.put()),
            60..=71 => Op::Delete(self.delete()),
            72..=95 => Op::Txn(self.txn(0)),
            _ => Op::Compact(CompactionRequest {
                revision: self.rng.random_range((self.compacted - 1).max(-1)..=self.revision + 1),
                physical: self.rng.random_ratio(1, 2),
            }),
        }
    }

    /// Tracks the store and compaction revisions from a response both servers agreed on.
    fn observe(&mut self, op: &Op, outcome: &str) {
        if let Ok(value) = serde_json::from_str::<Value>(outcome)
            && let Some(revision) = value.pointer("/header/revision").and_then(Value::as_str)
        {
            self.revision = revision.parse().expect("revision is a number");
            if let Op::Compact(c) = op {
                self.compacted = c.revision;
            }
        }
    }
}

/// Seeds the random comparison runs by default; SYNOD_SEED=n runs seed n alone. Each seed
/// starts from fresh servers, so a failing seed replays exactly.
const SEEDS: &[u64] = &[0x5eed_2026, 3, 20, 37, 42, 65, 88, 1234];

/// Seeded random sequences of hundreds of KV operations (puts, deletes, ranges with every
/// option, txns with nested txns, compactions, and requests that must fail) get the same
/// responses from synod and from etcd, field by field.
#[test]
fn random_operations_match_etcd() {
    let seeds: Vec<u64> = match std::env::var("SYNOD_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => SEEDS.to_vec(),
    };
    for seed in seeds {
        let dir = tempfile::tempdir().expect("tempdir");
        let Some(etcd) = Server::etcd(dir.path()) else { return };
        let synod = Server::synod(dir.path());
        compare_random_operations(&etcd, &synod, seed, 400);
    }
}

fn compare_random_operations(etcd: &Server, synod: &Server, seed: u64, operations: usize) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let (mut etcd_kv, mut synod_kv) = (kv(etcd).await, kv(synod).await);
        let mut generator = Generator { rng: StdRng::seed_from_u64(seed), revision: 1, compacted: 0 };
        let mut failures = 0;
        for step in 0..operations {
            let op = generator.op();
            let expected = run(&mut etcd_kv, &op).await;
            let actual = run(&mut synod_kv, &op).await;
            assert_eq!(
                actual, expected,
                "seed {seed}, step {step}: synod and etcd disagree on\n{op:#?}\n(replay with SYNOD_SEED={seed})"
            );
            if expected.starts_with("error") {
                failures += 1;
            }
            generator.observe(&op, &expected);
        }
        // The sequence must exercise both outcomes, or it proves little.
        assert!(failures > 15 && failures < operations / 2, "seed {seed}: {failures} of {operations} operations failed");
        assert!(generator.revision > 80, "seed {seed}: only {} revisions were written", generator.revision);
    });
}

/// Runs etcdctl with `args` (and `stdin`) against `address`; returns what a user sees:
/// stdout with ids and raft terms removed from JSON, the `Error:` line, and the exit code.
fn etcdctl(etcdctl: &std::path::Path, address: &str, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(etcdctl)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={address}"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn etcdctl");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    let output = child.wait_with_output().expect("etcdctl output");
    let mut seen = String::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        match serde_json::from_str::<Value>(line) {
            Ok(mut value) if value.is_object() => {
                normalize(&mut value);
                seen.push_str(&value.to_string());
            }
            _ => seen.push_str(line),
        }
        seen.push('\n');
    }
    // etcdctl logs retries with timestamps on stderr; the user-facing part is the error.
    for line in String::from_utf8_lossy(&output.stderr).lines().filter(|l| l.starts_with("Error:")) {
        seen.push_str(line);
        seen.push('\n');
    }
    seen.push_str(&format!("exit {:?}\n", output.status.code()));
    seen
}

/// The issue's acceptance session: the same etcdctl session of puts, gets, ranges, sorts,
/// limits, txns, deletes, compactions and failing requests prints identical output
/// against synod and etcd, apart from member and cluster ids and the raft term.
#[test]
fn etcdctl_session_matches_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(etcdctl_path) = interop_program("etcdctl") else { return };
    let Some(etcd) = Server::etcd(dir.path()) else { return };
    let synod = Server::synod(dir.path());
    let txn_success =
        "mod(\"k1\") > \"0\"\nvalue(\"k2\") = \"v2\"\n\nput k1 txn-ok\nget k --prefix\n\ndel k1\n\n";
    let txn_failure = "version(\"nope\") > \"0\"\n\nput k9 never\n\nget k --prefix --limit=1\nput k8 x\n\n";
    let session: Vec<(Vec<&str>, &str)> = vec![
        (vec!["put", "k1", "v1"], ""),
        (vec!["put", "k2", "v2"], ""),
        (vec!["put", "k3", "v3"], ""),
        (vec!["put", "k1", "v1b", "--prev-kv"], ""),
        (vec!["-w", "json", "put", "k4", "v4", "--prev-kv"], ""),
        (vec!["get", "k1"], ""),
        (vec!["-w", "json", "get", "k1"], ""),
        (vec!["-w", "json", "get", "k", "--prefix"], ""),
        (vec!["-w", "json", "get", "k2", "k4"], ""),
        (vec!["-w", "json", "get", "k2", "--from-key"], ""),
        (vec!["-w", "json", "get", "k", "--prefix", "--limit", "2"], ""),
        (vec!["-w", "json", "get", "k", "--prefix", "--order", "DESCEND"], ""),
        (vec!["-w", "json", "get", "k", "--prefix", "--sort-by", "VALUE", "--order", "DESCEND"], ""),
        (vec!["-w", "json", "get", "k", "--prefix", "--sort-by", "MODIFY"], ""),
        (
            vec![
                "-w",
                "json",
                "get",
                "k",
                "--prefix",
                "--sort-by",
                "CREATE",
                "--order",
                "ASCEND",
                "--limit",
                "3",
            ],
            "",
        ),
        (vec!["-w", "json", "get", "k", "--prefix", "--sort-by", "VERSION", "--order", "DESCEND"], ""),
        (vec!["-w", "json", "get", "k", "--prefix", "--keys-only"], ""),
        (vec!["get", "k", "--prefix", "--print-value-only"], ""),
        (vec!["-w", "json", "get", "k1", "--rev", "2"], ""),
        (vec!["-w", "json", "get", "k", "--prefix", "--rev", "3"], ""),
        (vec!["-w", "json", "get", "k1", "--rev", "1000"], ""),
        (vec!["-w", "json", "get", "k1", "--consistency", "s"], ""),
        (vec!["-w", "json", "txn"], txn_success),
        (vec!["-w", "json", "txn"], txn_failure),
        (vec!["txn"], txn_failure),
        (vec!["-w", "json", "del", "k3", "--prev-kv"], ""),
        (vec!["-w", "json", "del", "nothing"], ""),
        (vec!["-w", "json", "del", "k", "--prefix", "--prev-kv"], ""),
        (vec!["put", "a", "1"], ""),
        (vec!["put", "a", "2"], ""),
        (vec!["put", "b", "1"], ""),
        (vec!["compaction", "5"], ""),
        (vec!["-w", "json", "get", "a", "--rev", "4"], ""),
        (vec!["-w", "json", "get", "a", "--rev", "5"], ""),
        (vec!["compaction", "5"], ""),
        (vec!["compaction", "1000"], ""),
        (vec!["compaction", "--physical", "9"], ""),
        (vec!["-w", "json", "get", "", "--from-key"], ""),
        (vec!["put", "", "empty-key"], ""),
        (vec!["put", "k5", "--ignore-value"], ""),
        (vec!["put", "a", "--ignore-value"], ""),
        (vec!["-w", "json", "get", "a"], ""),
        (vec!["put", "k6", "v", "--lease", "1234"], ""),
        (vec!["del", ""], ""),
    ];
    let mut mismatches = Vec::new();
    for (args, stdin) in &session {
        let expected = etcdctl(&etcdctl_path, &etcd.address(), args, stdin);
        let actual = etcdctl(&etcdctl_path, &synod.address(), args, stdin);
        if actual != expected {
            mismatches.push(format!("etcdctl {}\n--- etcd\n{expected}--- synod\n{actual}", args.join(" ")));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} commands differ:\n{}",
        mismatches.len(),
        session.len(),
        mismatches.join("\n")
    );
}

/// One HTTP/1.1 request over a fresh connection; returns the status code and body.
fn http(address: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").expect("complete response");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status code");
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// The JSON gateway answers like etcd's: the same bodies (base64 bytes, 64-bit integers
/// as strings, proto field names) and the same HTTP statuses, errors included.
#[test]
fn json_gateway_matches_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(etcd) = Server::etcd(dir.path()) else { return };
    let synod = Server::synod(dir.path());
    let calls: &[(&str, &str)] = &[
        ("/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#),
        ("/v3/kv/put", r#"{"key":"Zm9v","value":"YmF6","prev_kv":true}"#),
        ("/v3/kv/put", r#"{"key":"Zm9vMg==","value":"eA==","prevKv":true}"#),
        ("/v3/kv/range", r#"{"key":"Zm9v"}"#),
        ("/v3/kv/range", r#"{"key":"Zm9v","range_end":"Zm9w","sort_order":"DESCEND","limit":"1"}"#),
        ("/v3/kv/range", r#"{"key":"Zm9v","range_end":"Zm9w","count_only":true}"#),
        ("/v3/kv/range", r#"{"key":"Zm9v","revision":"1000"}"#),
        ("/v3/kv/range", r#"{"key":""}"#),
        ("/v3/kv/range", r#"{"key":"Zm9v","unknown_field":1}"#),
        ("/v3/kv/range", r#"{"key":"Zm9v","range_end":null,"limit":null,"sort_order":null}"#),
        ("/v3/kv/put", r#"{"key":"Zm9vMw==","value":"eA==","lease":null,"prev_kv":null}"#),
        ("/v3/kv/range", r#"{"key":"not base64!"}"#),
        ("/v3/kv/range", r#"{"key":"#),
        (
            "/v3/kv/txn",
            r#"{"compare":[{"target":"CREATE","key":"Zm9v","createRevision":"2"}],"success":[{"requestPut":{"key":"Zm9v","value":"YmFy"}}],"failure":[{"requestRange":{"key":"Zm9v"}}]}"#,
        ),
        (
            "/v3/kv/txn",
            r#"{"compare":[{"result":"GREATER","target":"VERSION","key":"Zm9v","version":"100"}],"failure":[{"request_range":{"key":"Zm9v","keys_only":true}},{"request_delete_range":{"key":"Zm9vMg==","prev_kv":true}}]}"#,
        ),
        ("/v3/kv/deleterange", r#"{"key":"Zm9v","prev_kv":true}"#),
        ("/v3/kv/deleterange", r#"{"key":"Zm9v"}"#),
        ("/v3/kv/compaction", r#"{"revision":"3"}"#),
        ("/v3/kv/compaction", r#"{"revision":"3"}"#),
        ("/v3/kv/range", r#"{"key":"Zm9v","revision":"2"}"#),
        ("/v3beta/kv/range", r#"{"key":"Zm9v"}"#),
        ("/v3/kv/put", ""),
    ];
    let malformed = [r#"{"key":"not base64!"}"#, r#"{"key":"#];
    let mut mismatches = Vec::new();
    for (path, body) in calls {
        let mut answers = Vec::new();
        for server in [&etcd, &synod] {
            let (status, text) = http(&server.address(), "POST", path, body);
            let body = match serde_json::from_str::<Value>(&text) {
                Ok(mut value) => {
                    normalize(&mut value);
                    // A body that does not decode gets InvalidArgument; the message quotes
                    // the decoder (Go's or serde's), so only the code is the contract.
                    if malformed.contains(body) {
                        value.as_object_mut().expect("error object").retain(|k, _| k == "code");
                    }
                    value
                }
                Err(_) => Value::String(text),
            };
            answers.push((status, body));
        }
        if answers[0] != answers[1] {
            mismatches
                .push(format!("POST {path} {body}\n  etcd:  {:?}\n  synod: {:?}", answers[0], answers[1]));
        }
    }
    assert!(mismatches.is_empty(), "gateway differs:\n{}", mismatches.join("\n"));
}

/// etcdctl's endpoint commands dial `http://` endpoints with that URL as the HTTP/2
/// `:authority`, which h2 on its own rejects (RST_STREAM, PROTOCOL_ERROR); synod answers
/// them as etcd does.
#[test]
fn etcdctl_endpoint_commands_reach_synod() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(etcdctl_path) = interop_program("etcdctl") else { return };
    let synod = Server::synod(dir.path());
    let endpoint = synod.endpoint();

    let status = etcdctl(&etcdctl_path, &endpoint, &["endpoint", "status", "-w", "json"], "");
    assert!(status.ends_with("exit Some(0)\n"), "etcdctl endpoint status failed:\n{status}");
    let json = status.lines().next().unwrap_or_default();
    let parsed: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {status}"));
    assert_eq!(parsed[0]["Endpoint"], endpoint.as_str(), "{status}");
    assert!(parsed[0]["Status"]["leader"].as_u64().is_some_and(|id| id != 0), "{status}");

    let hashkv = etcdctl(&etcdctl_path, &endpoint, &["endpoint", "hashkv"], "");
    assert!(hashkv.ends_with("exit Some(0)\n"), "etcdctl endpoint hashkv failed:\n{hashkv}");
    assert!(hashkv.starts_with(&format!("{endpoint}, ")), "{hashkv}");
}
