//! Data-driven tests of etcd's KV semantics: every file in `testdata/` is a session of
//! commands with their expected output, run against a fresh store on an in-memory backend.
//!
//! A case is one command (a Txn spans several indented lines), a `----` line, and the
//! expected output, ended by a blank line. Set `SYNOD_REWRITE_FIXTURES=1` to rewrite the
//! expected output from what the store does now; review the diff before committing it.
//!
//! Commands:
//!   put KEY VALUE [lease=N] [prev_kv] [ignore_value] [ignore_lease]
//!   del KEY [end=END|prefix|from_key] [prev_kv]
//!   range KEY [end=END|prefix|from_key] [rev=N] [limit=N] [sort=asc|desc|none]
//!         [target=key|version|create|mod|value] [keys_only] [count_only]
//!         [min_mod=N] [max_mod=N] [min_create=N] [max_create=N] [serializable]
//!         (sort and target also take raw enum numbers)
//!   txn                      followed by indented `if CMP`, `then OP`, `else OP` lines;
//!                            an op may be `txn` with its own, further indented, lines
//!   compact REV
//!   alarm activate|deactivate|get [nospace|corrupt] [member=N]
//!   lease grant ID TTL | lease revoke ID | lease checkpoint ID REMAINING_MS
//!   leases                   every lease with its TTL, checkpoint and attached keys
//!   counter KEY OP...        one counter entry; each OP is DELTA, or
//!                            SESSION:SEQUENCE:DELTA[:ANSWERED_BELOW] for an add in a session
//!   sessions                 every counter session with its floor and recorded results
//!   restart                  rebuild the store from its persisted meta and records, as a
//!                            member does when it starts
//! A compare is TARGET(KEY[..END]) OP VALUE with TARGET one of value, version, create, mod,
//! lease and OP one of =, !=, >, <. Keys and values accept \xNN escapes; `<empty>` is
//! the empty string.

use std::fmt::Write as _;
use std::path::Path;

use synod_api::etcdserverpb::alarm_request::AlarmAction;
use synod_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use synod_api::etcdserverpb::range_request::{SortOrder, SortTarget};
use synod_api::etcdserverpb::{
    AlarmRequest, AlarmType, CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest,
    LeaseRevokeRequest, PutRequest, RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse,
    request_op, response_op,
};
use synod_api::mvccpb::KeyValue;
use synod_api::synodpb::{Command, CounterAdd, CounterOp, LeaseCheckpoint, LeaseCheckpoints, command};
use synod_mvcc::{KvStore, MemBackend, Response};

#[test]
fn fixtures() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let rewrite = std::env::var_os("SYNOD_REWRITE_FIXTURES").is_some();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("read testdata")
        .map(|e| e.expect("read testdata entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    let mut failures = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read fixture");
        let (rewritten, mismatches) = run_file(&text);
        if rewrite {
            std::fs::write(&file, rewritten).expect("rewrite fixture");
        } else {
            for m in mismatches {
                failures.push(format!("{}: {m}", file.display()));
            }
        }
    }
    assert!(failures.is_empty(), "fixture mismatches:\n{}", failures.join("\n"));
}

/// Runs every case of one file; returns the file with actual outputs and the mismatches.
fn run_file(text: &str) -> (String, Vec<String>) {
    let mut store = KvStore::new();
    let mut backend = MemBackend::default();
    let mut out = String::new();
    let mut mismatches = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.trim().is_empty() || line.starts_with('#') {
            out.push_str(line);
            out.push('\n');
            i += 1;
            continue;
        }
        let start = i;
        while i < lines.len() && lines[i] != "----" {
            i += 1;
        }
        assert!(i < lines.len(), "case at line {} has no ---- line", start + 1);
        let command: Vec<&str> = lines[start..i].to_vec();
        i += 1;
        let expected_start = i;
        while i < lines.len() && !lines[i].trim().is_empty() {
            i += 1;
        }
        let expected = lines[expected_start..i].join("\n");
        let actual = run_case(&mut store, &mut backend, &command);
        if actual.trim_end() != expected.trim_end() {
            mismatches.push(format!(
                "line {}: {}\n--- expected\n{}\n--- actual\n{}",
                start + 1,
                command.join(" / "),
                expected,
                actual.trim_end()
            ));
        }
        for l in &command {
            out.push_str(l);
            out.push('\n');
        }
        out.push_str("----\n");
        out.push_str(actual.trim_end());
        out.push('\n');
    }
    // Whatever the session did, the backend holds exactly the records the index needs.
    let records = backend.records().count();
    store.check_backend(&backend, records).expect("index and backend agree");
    (out, mismatches)
}

fn run_case(store: &mut KvStore, backend: &mut MemBackend, command: &[&str]) -> String {
    let words: Vec<&str> = command[0].split_whitespace().collect();
    let mut out = String::new();
    match words[0] {
        "restart" => {
            let records = backend
                .records()
                .map(|(rev, stored)| Ok::<_, synod_mvcc::BackendError>((*rev, stored.clone())));
            let leases = backend.leases().map(|l| Ok(*l));
            let sessions = backend.sessions().map(|s| Ok(s.clone()));
            // As the state file's marker does: a compaction's records not yet deleted are
            // found again.
            let reclaiming = !store.unreclaimed().is_empty() || store.index_pass_pending();
            *store = KvStore::restore(
                store.meta(),
                records,
                leases,
                sessions,
                backend.auth().cloned(),
                reclaiming,
            )
            .expect("restore");
            writeln!(
                out,
                "restarted at rev={} compacted={}",
                store.current_revision(),
                store.compact_revision()
            )
            .unwrap();
        }
        "leases" => {
            for lease in store.leases().records() {
                let keys = &store.leases().get(lease.id).expect("listed lease exists").keys;
                let keys: Vec<String> =
                    keys.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
                writeln!(
                    out,
                    "lease {} ttl={} remaining_ms={} keys=[{}]",
                    lease.id,
                    lease.ttl,
                    lease.remaining_ms,
                    keys.join(" ")
                )
                .unwrap();
            }
            let stored: Vec<_> = backend.leases().copied().collect();
            let live: Vec<_> = store.leases().records().copied().collect();
            assert_eq!(stored, live, "the backend stores the leases the store has");
        }
        "sessions" => {
            for session in store.counter_sessions().iter() {
                let results: Vec<String> = session
                    .results
                    .iter()
                    .map(|r| format!("{}={}@{}", r.sequence, r.value, r.revision))
                    .collect();
                writeln!(
                    out,
                    "session {} floor={} results=[{}]",
                    session.lease,
                    session.floor,
                    results.join(" ")
                )
                .unwrap();
            }
            let stored: Vec<_> = backend.sessions().cloned().collect();
            let live: Vec<_> = store.counter_sessions().iter().cloned().collect();
            assert_eq!(stored, live, "the backend stores the sessions the store has");
        }
        "range" => match store.plan_range(&range_request(&words[1..])) {
            Ok(plan) => print_range(&mut out, "", &plan.execute(backend).expect("backend")),
            Err(e) => writeln!(out, "error: {e}").unwrap(),
        },
        "txn" => {
            let (request, _) = parse_txn(command, 1, indent_of(command.get(1).copied().unwrap_or("  ")));
            let result = if synod_mvcc::txn_is_read_only(&request) {
                store.read_txn(backend, &request).expect("backend")
            } else {
                apply(store, backend, command::Op::Txn(request)).map(|r| match r {
                    Response::Txn(t) => t,
                    other => panic!("unexpected response {other:?}"),
                })
            };
            match result {
                Ok(t) => print_txn(&mut out, "", &t),
                Err(e) => writeln!(out, "error: {e}").unwrap(),
            }
        }
        _ => {
            let op = parse_write(&words);
            match apply(store, backend, op) {
                Ok(response) => print_response(&mut out, &response),
                Err(e) => writeln!(out, "error: {e}").unwrap(),
            }
        }
    }
    out
}

fn apply(store: &mut KvStore, backend: &mut MemBackend, op: command::Op) -> synod_mvcc::Applied {
    let command = Command { op: Some(op), ..Default::default() };
    store.apply(backend, &command).expect("backend")
}

fn parse_write(words: &[&str]) -> command::Op {
    match words[0] {
        "put" => command::Op::Put(put_request(&words[1..])),
        "del" => command::Op::DeleteRange(delete_request(&words[1..])),
        "compact" => command::Op::Compaction(CompactionRequest {
            revision: words[1].parse().expect("compact revision"),
            physical: false,
        }),
        "alarm" => {
            let action = match words[1] {
                "activate" => AlarmAction::Activate,
                "deactivate" => AlarmAction::Deactivate,
                "get" => AlarmAction::Get,
                other => panic!("unknown alarm action {other}"),
            };
            let mut request = AlarmRequest { action: action as i32, ..Default::default() };
            for word in &words[2..] {
                match word.split_once('=') {
                    Some(("member", n)) => request.member_id = n.parse().expect("member id"),
                    None if *word == "nospace" => request.alarm = AlarmType::Nospace as i32,
                    None if *word == "corrupt" => request.alarm = AlarmType::Corrupt as i32,
                    _ => panic!("unknown alarm option {word}"),
                }
            }
            command::Op::Alarm(request)
        }
        "lease" => {
            let number = |i: usize| -> i64 { words[i].parse().expect("lease number") };
            match words[1] {
                "grant" => command::Op::LeaseGrant(LeaseGrantRequest { id: number(2), ttl: number(3) }),
                "revoke" => command::Op::LeaseRevoke(LeaseRevokeRequest { id: number(2) }),
                "checkpoint" => command::Op::LeaseCheckpoints(LeaseCheckpoints {
                    checkpoints: vec![LeaseCheckpoint { id: number(2), remaining_ms: number(3) }],
                }),
                other => panic!("unknown lease action {other}"),
            }
        }
        "counter" => command::Op::CounterAdd(CounterAdd {
            key: unescape(words[1]),
            ops: words[2..].iter().map(|op| counter_op(op)).collect(),
        }),
        other => panic!("unknown command {other}"),
    }
}

fn counter_op(text: &str) -> CounterOp {
    let numbers: Vec<&str> = text.split(':').collect();
    let number = |i: usize| -> i64 { numbers[i].parse().expect("counter op number") };
    match numbers.len() {
        1 => CounterOp { delta: number(0), ..Default::default() },
        3 | 4 => CounterOp {
            session: number(0),
            sequence: number(1) as u64,
            delta: number(2),
            answered_below: if numbers.len() == 4 { number(3) as u64 } else { 0 },
            ..Default::default()
        },
        _ => panic!("a counter op is DELTA or SESSION:SEQUENCE:DELTA[:ANSWERED_BELOW], not {text}"),
    }
}

fn unescape(text: &str) -> Vec<u8> {
    if text == "<empty>" {
        return Vec::new();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'x') {
            let hex = std::str::from_utf8(&bytes[i + 2..i + 4]).expect("escape");
            out.push(u8::from_str_radix(hex, 16).expect("hex escape"));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

fn escape(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes {
        if b.is_ascii_graphic() && b != b'\\' {
            out.push(b as char);
        } else {
            write!(out, "\\x{b:02x}").unwrap();
        }
    }
    out
}

/// Applies `end=`, `prefix` and `from_key` options to a range end.
fn range_end(key: &[u8], option: &str) -> Option<Vec<u8>> {
    match option.split_once('=') {
        Some(("end", end)) => Some(unescape(end)),
        None if option == "from_key" => Some(vec![0]),
        None if option == "prefix" => {
            let mut end = key.to_vec();
            while let Some(last) = end.last_mut() {
                if *last < 0xff {
                    *last += 1;
                    return Some(end);
                }
                end.pop();
            }
            Some(vec![0])
        }
        _ => None,
    }
}

fn put_request(words: &[&str]) -> PutRequest {
    let mut request = PutRequest { key: unescape(words[0]), ..Default::default() };
    let mut options = &words[1..];
    if let Some(value) = options.first().filter(|w| !is_option(w)) {
        request.value = unescape(value);
        options = &options[1..];
    }
    for word in options {
        match word.split_once('=') {
            Some(("lease", n)) => request.lease = n.parse().expect("lease"),
            None if *word == "prev_kv" => request.prev_kv = true,
            None if *word == "ignore_value" => request.ignore_value = true,
            None if *word == "ignore_lease" => request.ignore_lease = true,
            _ => panic!("unknown put option {word}"),
        }
    }
    request
}

fn is_option(word: &str) -> bool {
    ["prev_kv", "ignore_value", "ignore_lease"].contains(&word) || word.starts_with("lease=")
}

fn delete_request(words: &[&str]) -> DeleteRangeRequest {
    let mut request = DeleteRangeRequest { key: unescape(words[0]), ..Default::default() };
    for word in &words[1..] {
        if let Some(end) = range_end(&request.key, word) {
            request.range_end = end;
        } else if *word == "prev_kv" {
            request.prev_kv = true;
        } else {
            panic!("unknown del option {word}");
        }
    }
    request
}

fn range_request(words: &[&str]) -> RangeRequest {
    let mut request = RangeRequest { key: unescape(words[0]), ..Default::default() };
    for word in &words[1..] {
        if let Some(end) = range_end(&request.key, word) {
            request.range_end = end;
            continue;
        }
        let number = |n: &str| n.parse::<i64>().expect("number");
        match word.split_once('=') {
            Some(("rev", n)) => request.revision = number(n),
            Some(("limit", n)) => request.limit = number(n),
            Some(("min_mod", n)) => request.min_mod_revision = number(n),
            Some(("max_mod", n)) => request.max_mod_revision = number(n),
            Some(("min_create", n)) => request.min_create_revision = number(n),
            Some(("max_create", n)) => request.max_create_revision = number(n),
            Some(("sort", o)) => {
                request.sort_order = match o {
                    "asc" => SortOrder::Ascend as i32,
                    "desc" => SortOrder::Descend as i32,
                    "none" => SortOrder::None as i32,
                    raw => raw.parse().expect("a sort order name or number"),
                }
            }
            Some(("target", t)) => {
                request.sort_target = match t {
                    "key" => SortTarget::Key as i32,
                    "version" => SortTarget::Version as i32,
                    "create" => SortTarget::Create as i32,
                    "mod" => SortTarget::Mod as i32,
                    "value" => SortTarget::Value as i32,
                    raw => raw.parse().expect("a sort target name or number"),
                }
            }
            None if *word == "keys_only" => request.keys_only = true,
            None if *word == "count_only" => request.count_only = true,
            None if *word == "serializable" => request.serializable = true,
            _ => panic!("unknown range option {word}"),
        }
    }
    request
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Parses the txn whose body starts at `lines[start]` at `indent`; returns it and the index
/// of the first line after it.
fn parse_txn(lines: &[&str], start: usize, indent: usize) -> (TxnRequest, usize) {
    let mut txn = TxnRequest::default();
    let mut i = start;
    while i < lines.len() && indent_of(lines[i]) == indent {
        let line = lines[i].trim();
        let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
        i += 1;
        match kind {
            "if" => txn.compare.push(parse_compare(rest)),
            "then" | "else" => {
                let words: Vec<&str> = rest.split_whitespace().collect();
                let op = match words[0] {
                    "txn" => {
                        let (nested, next) = parse_txn(lines, i, indent_of(lines[i]));
                        i = next;
                        request_op::Request::RequestTxn(nested)
                    }
                    "range" => request_op::Request::RequestRange(range_request(&words[1..])),
                    "put" => request_op::Request::RequestPut(put_request(&words[1..])),
                    "del" => request_op::Request::RequestDeleteRange(delete_request(&words[1..])),
                    "empty" => {
                        let list = if kind == "then" { &mut txn.success } else { &mut txn.failure };
                        list.push(RequestOp { request: None });
                        continue;
                    }
                    other => panic!("unknown txn op {other}"),
                };
                let list = if kind == "then" { &mut txn.success } else { &mut txn.failure };
                list.push(RequestOp { request: Some(op) });
            }
            other => panic!("unknown txn line {other}"),
        }
    }
    (txn, i)
}

fn parse_compare(text: &str) -> Compare {
    let words: Vec<&str> = text.split_whitespace().collect();
    let [target, op, value] = words[..] else { panic!("compare needs TARGET(KEY) OP VALUE: {text}") };
    let (name, key) = target.split_once('(').expect("compare target");
    let key = key.strip_suffix(')').expect("compare target closes");
    let (key, end) = key.split_once("..").unwrap_or((key, ""));
    let result = match op {
        "=" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        ">" => CompareResult::Greater,
        "<" => CompareResult::Less,
        _ => panic!("unknown compare op {op}"),
    };
    let number = || value.parse::<i64>().expect("number");
    let (target, union) = match name {
        "value" => (CompareTarget::Value, TargetUnion::Value(unescape(value))),
        "version" => (CompareTarget::Version, TargetUnion::Version(number())),
        "create" => (CompareTarget::Create, TargetUnion::CreateRevision(number())),
        "mod" => (CompareTarget::Mod, TargetUnion::ModRevision(number())),
        "lease" => (CompareTarget::Lease, TargetUnion::Lease(number())),
        _ => panic!("unknown compare target {name}"),
    };
    Compare {
        result: result as i32,
        target: target as i32,
        key: unescape(key),
        range_end: unescape(end),
        target_union: Some(union),
    }
}

fn print_kv(out: &mut String, indent: &str, kv: &KeyValue) {
    writeln!(
        out,
        "{indent}{}={} create={} mod={} ver={} lease={}",
        escape(&kv.key),
        escape(&kv.value),
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        kv.lease
    )
    .unwrap();
}

fn revision(header: &Option<synod_api::etcdserverpb::ResponseHeader>) -> i64 {
    header.as_ref().map_or(0, |h| h.revision)
}

fn print_range(out: &mut String, indent: &str, r: &RangeResponse) {
    writeln!(out, "{indent}range rev={} count={} more={}", revision(&r.header), r.count, r.more).unwrap();
    for kv in &r.kvs {
        print_kv(out, &format!("{indent}  "), kv);
    }
}

fn print_txn(out: &mut String, indent: &str, t: &TxnResponse) {
    writeln!(out, "{indent}txn rev={} succeeded={}", revision(&t.header), t.succeeded).unwrap();
    let inner = format!("{indent}  ");
    for op in &t.responses {
        match &op.response {
            Some(response_op::Response::ResponseRange(r)) => print_range(out, &inner, r),
            Some(response_op::Response::ResponsePut(p)) => {
                writeln!(out, "{inner}put rev={}", revision(&p.header)).unwrap();
                if let Some(prev) = &p.prev_kv {
                    print_kv(out, &format!("{inner}  prev "), prev);
                }
            }
            Some(response_op::Response::ResponseDeleteRange(d)) => {
                writeln!(out, "{inner}del rev={} deleted={}", revision(&d.header), d.deleted).unwrap();
                for kv in &d.prev_kvs {
                    print_kv(out, &format!("{inner}  prev "), kv);
                }
            }
            Some(response_op::Response::ResponseTxn(t)) => print_txn(out, &inner, t),
            None => writeln!(out, "{inner}(empty)").unwrap(),
        }
    }
}

fn print_response(out: &mut String, response: &Response) {
    match response {
        Response::Put(p) => {
            writeln!(out, "put rev={}", revision(&p.header)).unwrap();
            if let Some(prev) = &p.prev_kv {
                print_kv(out, "  prev ", prev);
            }
        }
        Response::DeleteRange(d) => {
            writeln!(out, "del rev={} deleted={}", revision(&d.header), d.deleted).unwrap();
            for kv in &d.prev_kvs {
                print_kv(out, "  prev ", kv);
            }
        }
        Response::Txn(t) => print_txn(out, "", t),
        Response::Compaction(c) => writeln!(out, "compact rev={}", revision(&c.header)).unwrap(),
        Response::LeaseGrant(g) => writeln!(out, "lease granted id={} ttl={}", g.id, g.ttl).unwrap(),
        Response::LeaseRevoke(r) => writeln!(out, "lease revoked rev={}", revision(&r.header)).unwrap(),
        Response::LeaseCheckpoints => writeln!(out, "lease checkpointed").unwrap(),
        Response::Auth(revision) => writeln!(out, "auth revision={revision}").unwrap(),
        Response::CounterAdd(results) => {
            for result in results {
                match result {
                    Ok(v) => writeln!(out, "counter value={} rev={}", v.value, v.revision).unwrap(),
                    Err(e) => writeln!(out, "counter error: {e}").unwrap(),
                }
            }
        }
        Response::Alarm(a) => {
            let alarms: Vec<String> =
                a.alarms.iter().map(|m| format!("{}:{}", m.member_id, m.alarm)).collect();
            writeln!(out, "alarm [{}]", alarms.join(" ")).unwrap();
        }
    }
}
