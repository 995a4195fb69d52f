//! Request checks that etcd makes before a request reaches consensus.
//!
//! The server runs these before proposing, so that a bad request fails fast with etcd's
//! error; the state machine runs them again when applying, so that a malformed log entry
//! (from a buggy or hostile peer) gets the same deterministic error on every member instead
//! of undefined behaviour. The rules and their order are etcd's (`v3rpc/key.go`).

use std::collections::HashSet;

use synod_api::EtcdError;
use synod_api::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, request_op,
};
use synod_api::synodpb::CounterAdd;

pub fn range(request: &RangeRequest) -> Result<(), EtcdError> {
    if request.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    Ok(())
}

/// A counter entry names its key; its ops are checked one by one as they apply.
pub fn counter_add(request: &CounterAdd) -> Result<(), EtcdError> {
    if request.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    Ok(())
}

pub fn put(request: &PutRequest) -> Result<(), EtcdError> {
    if request.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if request.ignore_value && !request.value.is_empty() {
        return Err(EtcdError::ValueProvided);
    }
    if request.ignore_lease && request.lease != 0 {
        return Err(EtcdError::LeaseProvided);
    }
    Ok(())
}

pub fn delete_range(request: &DeleteRangeRequest) -> Result<(), EtcdError> {
    if request.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    Ok(())
}

/// Checks a Txn: operation counts, empty keys, empty ops, then keys written twice.
pub fn txn(request: &TxnRequest, ops_max: usize) -> Result<(), EtcdError> {
    txn_ops(request, ops_max)?;
    // Checked after the per-op checks, as etcd does, to avoid quadratic work on requests
    // that are rejected anyway.
    intervals(&request.success)?;
    intervals(&request.failure)?;
    Ok(())
}

fn txn_ops(request: &TxnRequest, ops_max: usize) -> Result<(), EtcdError> {
    let ops = request.compare.len().max(request.success.len()).max(request.failure.len());
    if ops > ops_max {
        return Err(EtcdError::TooManyOps);
    }
    if request.compare.iter().any(|c| c.key.is_empty()) {
        return Err(EtcdError::EmptyKey);
    }
    // A nested txn gets what its parent left of the budget (etcd's rule).
    let nested_max = ops_max - ops;
    for op in request.success.iter().chain(&request.failure) {
        request_op(op, nested_max)?;
    }
    Ok(())
}

fn request_op(op: &RequestOp, ops_max: usize) -> Result<(), EtcdError> {
    match &op.request {
        Some(request_op::Request::RequestRange(r)) => range(r),
        Some(request_op::Request::RequestPut(r)) => put(r),
        Some(request_op::Request::RequestDeleteRange(r)) => delete_range(r),
        Some(request_op::Request::RequestTxn(r)) => txn_ops(r, ops_max),
        None => Err(EtcdError::KeyNotFound),
    }
}

/// A deleted span `[begin, end)` as etcd's interval check sees it. A delete with
/// `range_end = "\0"` is an empty interval here (its end sorts before its begin), so it
/// never conflicts with a put; that is etcd's behaviour and clients can observe it.
struct DeletedSpan {
    begin: Vec<u8>,
    end: Vec<u8>,
}

impl DeletedSpan {
    fn contains(&self, key: &[u8]) -> bool {
        self.begin.as_slice() <= key && key < self.end.as_slice()
    }
}

/// Rejects a list of ops (and its nested txns) that would write a key twice: two puts of
/// one key, or a put into a deleted span. Puts in the two branches of one nested txn do not
/// conflict with each other, because only one branch runs.
fn intervals(ops: &[RequestOp]) -> Result<(HashSet<Vec<u8>>, Vec<DeletedSpan>), EtcdError> {
    let mut deletes = Vec::new();
    for op in ops {
        if let Some(request_op::Request::RequestDeleteRange(d)) = &op.request {
            let end = if d.range_end.is_empty() {
                // Just the key: the span up to its immediate successor.
                let mut end = d.key.clone();
                end.push(0);
                end
            } else {
                d.range_end.clone()
            };
            deletes.push(DeletedSpan { begin: d.key.clone(), end });
        }
    }

    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    for op in ops {
        let Some(request_op::Request::RequestTxn(nested)) = &op.request else {
            continue;
        };
        let (puts_then, deletes_then) = intervals(&nested.success)?;
        let (puts_else, deletes_else) = intervals(&nested.failure)?;
        let conflicts = |key: &Vec<u8>, deletes: &[DeletedSpan]| deletes.iter().any(|d| d.contains(key));
        for key in &puts_then {
            if puts.contains(key) || conflicts(key, &deletes) {
                return Err(EtcdError::DuplicateKey);
            }
        }
        puts.extend(puts_then.iter().cloned());
        for key in puts_else {
            if (puts.contains(&key) && !puts_then.contains(&key)) || conflicts(&key, &deletes) {
                return Err(EtcdError::DuplicateKey);
            }
            puts.insert(key);
        }
        deletes.extend(deletes_then);
        deletes.extend(deletes_else);
    }

    for op in ops {
        let Some(request_op::Request::RequestPut(p)) = &op.request else {
            continue;
        };
        if puts.contains(&p.key) || deletes.iter().any(|d| d.contains(&p.key)) {
            return Err(EtcdError::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, deletes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_api::etcdserverpb::Compare;

    fn put_op(key: &str) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: key.into(),
                ..Default::default()
            })),
        }
    }

    fn del_op(key: &str, end: &[u8]) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                key: key.into(),
                range_end: end.to_vec(),
                ..Default::default()
            })),
        }
    }

    fn txn_op(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestTxn(TxnRequest { compare: vec![], success, failure })),
        }
    }

    fn txn_of(success: Vec<RequestOp>) -> TxnRequest {
        TxnRequest { compare: vec![], success, failure: vec![] }
    }

    /// Writing a key twice in one branch is etcd's "duplicate key" error, whichever way it
    /// is written; the two branches of a nested txn may write the same key.
    #[test]
    fn duplicate_writes_are_rejected() {
        let dup = Err(EtcdError::DuplicateKey);
        assert_eq!(txn(&txn_of(vec![put_op("a"), put_op("a")]), 128), dup);
        assert_eq!(txn(&txn_of(vec![put_op("b"), del_op("a", b"c")]), 128), dup);
        assert_eq!(txn(&txn_of(vec![put_op("a"), del_op("a", b"")]), 128), dup);
        assert_eq!(txn(&txn_of(vec![put_op("a"), txn_op(vec![put_op("a")], vec![])]), 128), dup);
        assert_eq!(txn(&txn_of(vec![txn_op(vec![put_op("a")], vec![put_op("a")])]), 128), Ok(()));
        assert_eq!(txn(&txn_of(vec![put_op("c"), del_op("a", b"c")]), 128), Ok(()));
        // etcd's quirk: a delete to the end of the keyspace ("\0") never conflicts.
        assert_eq!(txn(&txn_of(vec![put_op("b"), del_op("a", b"\0")]), 128), Ok(()));
    }

    /// The op budget counts the longest of compare, success and failure, and nested txns
    /// get what is left of it.
    #[test]
    fn op_budget() {
        let many = |n: usize| (0..n).map(|i| put_op(&format!("k{i}"))).collect::<Vec<_>>();
        assert_eq!(txn(&txn_of(many(128)), 128), Ok(()));
        assert_eq!(txn(&txn_of(many(129)), 128), Err(EtcdError::TooManyOps));
        let nested = txn_op(many(3), vec![]);
        let mut ops = many(126);
        ops.push(nested);
        assert_eq!(txn(&txn_of(ops), 128), Err(EtcdError::TooManyOps));
    }

    /// Empty keys and empty ops get etcd's errors.
    #[test]
    fn empty_keys_and_ops() {
        let mut request = txn_of(vec![]);
        request.compare.push(Compare::default());
        assert_eq!(txn(&request, 128), Err(EtcdError::EmptyKey));
        assert_eq!(txn(&txn_of(vec![RequestOp { request: None }]), 128), Err(EtcdError::KeyNotFound));
        assert_eq!(txn(&txn_of(vec![put_op("")]), 128), Err(EtcdError::EmptyKey));
        let put =
            PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ignore_value: true, ..Default::default() };
        assert_eq!(super::put(&put), Err(EtcdError::ValueProvided));
        let put = PutRequest { key: b"k".to_vec(), lease: 5, ignore_lease: true, ..Default::default() };
        assert_eq!(super::put(&put), Err(EtcdError::LeaseProvided));
    }
}
