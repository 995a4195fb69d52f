//! The `simple` format (etcdctl's `printer_simple.go`): keys and values on lines of their
//! own, `OK` for a put, the deleted count for a del, comma-separated rows for the rest.
//!
//! Keys and values are written as the raw bytes they are, as etcdctl does, so binary
//! values come out unchanged.

use synod_api::etcdserverpb::{DeleteRangeResponse, PutResponse, RangeResponse, TxnResponse, response_op};
use synod_api::mvccpb::KeyValue;

use super::{EndpointHealth, Output};

/// etcdctl's `printKV`: the key, then the value, each on a line; `\xNN` bytes with `--hex`.
fn key_value(out: &mut Vec<u8>, kv: &KeyValue, hex: bool, value_only: bool) {
    let mut line = |bytes: &[u8]| {
        if hex {
            for byte in bytes {
                out.extend_from_slice(format!("\\x{byte:02x}").as_bytes());
            }
        } else {
            out.extend_from_slice(bytes);
        }
        out.push(b'\n');
    };
    if !value_only {
        line(&kv.key);
    }
    line(&kv.value);
}

/// etcdctl's simple `Watch`: each event's type, then its previous key-value (with
/// `--prev-kv`), then its key-value.
pub fn watch(out: &mut Vec<u8>, events: &[synod_api::mvccpb::Event], hex: bool) {
    for event in events {
        let kind =
            if event.r#type == synod_api::mvccpb::event::EventType::Delete as i32 { "DELETE" } else { "PUT" };
        out.extend_from_slice(kind.as_bytes());
        out.push(b'\n');
        if let Some(prev) = &event.prev_kv {
            key_value(out, prev, hex, false);
        }
        if let Some(kv) = &event.kv {
            key_value(out, kv, hex, false);
        }
    }
}

pub fn get(out: &mut Vec<u8>, response: &RangeResponse, hex: bool, value_only: bool) {
    for kv in &response.kvs {
        key_value(out, kv, hex, value_only);
    }
}

pub fn put(out: &mut Vec<u8>, response: &PutResponse, hex: bool) {
    out.extend_from_slice(b"OK\n");
    if let Some(prev_kv) = &response.prev_kv {
        key_value(out, prev_kv, hex, false);
    }
}

pub fn del(out: &mut Vec<u8>, response: &DeleteRangeResponse, hex: bool) {
    out.extend_from_slice(format!("{}\n", response.deleted).as_bytes());
    for kv in &response.prev_kvs {
        key_value(out, kv, hex, false);
    }
}

pub fn txn(out: &mut Vec<u8>, response: &TxnResponse, hex: bool) {
    out.extend_from_slice(if response.succeeded { b"SUCCESS\n" } else { b"FAILURE\n" });
    for op in &response.responses {
        out.push(b'\n');
        match &op.response {
            Some(response_op::Response::ResponseDeleteRange(r)) => del(out, r, hex),
            Some(response_op::Response::ResponsePut(r)) => put(out, r, hex),
            Some(response_op::Response::ResponseRange(r)) => get(out, r, hex, false),
            // etcdctl prints Go's `%+v` of the response here; nested txns cannot be written
            // in its txn syntax, so only a server reply can bring this.
            other => out.extend_from_slice(format!("unexpected response {other:?}\n").as_bytes()),
        }
    }
}

/// Rows joined with `, `, one a line (member list, endpoint status).
pub fn lines(out: &mut Vec<u8>, rows: &[Vec<String>]) {
    for row in rows {
        out.extend_from_slice(row.join(", ").as_bytes());
        out.push(b'\n');
    }
}

/// Healthy endpoints on stdout, unhealthy ones on stderr, as etcdctl prints them.
pub fn endpoint_health(out: &mut Output, health: &[EndpointHealth]) {
    for h in health {
        if h.error.is_empty() {
            let line =
                format!("{} is healthy: successfully committed proposal: took = {}\n", h.endpoint, h.took);
            out.stdout.extend_from_slice(line.as_bytes());
        } else {
            let line = format!("{} is unhealthy: failed to commit proposal: {}\n", h.endpoint, h.error);
            out.stderr.extend_from_slice(line.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &[u8], value: &[u8]) -> KeyValue {
        KeyValue { key: key.to_vec(), value: value.to_vec(), ..Default::default() }
    }

    /// Keys and values print raw, or as `\xNN` with `--hex`; value-only drops keys.
    #[test]
    fn key_values() {
        let response = RangeResponse { kvs: vec![kv(b"k1", b"v\xff"), kv(b"k2", b"")], ..Default::default() };
        let mut out = Vec::new();
        get(&mut out, &response, false, false);
        assert_eq!(out, b"k1\nv\xff\nk2\n\n");
        let mut out = Vec::new();
        get(&mut out, &response, true, true);
        assert_eq!(out, b"\\x76\\xff\n\n");
    }

    /// A txn prints its outcome, then each response after a blank line.
    #[test]
    fn txn_layout() {
        let response = TxnResponse {
            succeeded: false,
            responses: vec![
                synod_api::etcdserverpb::ResponseOp {
                    response: Some(response_op::Response::ResponsePut(PutResponse::default())),
                },
                synod_api::etcdserverpb::ResponseOp {
                    response: Some(response_op::Response::ResponseDeleteRange(DeleteRangeResponse {
                        deleted: 2,
                        ..Default::default()
                    })),
                },
            ],
            ..Default::default()
        };
        let mut out = Vec::new();
        txn(&mut out, &response, false);
        assert_eq!(String::from_utf8(out).unwrap(), "FAILURE\n\nOK\n\n2\n");
    }
}
