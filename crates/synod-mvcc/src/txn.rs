//! Txn evaluation: compares, the branch path, and the checks etcd makes before a Txn
//! changes anything (`applyCompares`, `compareToPath`, `checkRequests` in etcd's apply.go).
//!
//! All compares of a Txn, nested ones included, are evaluated against the store as it was
//! before the Txn started, so the branch taken by a nested Txn does not depend on the writes
//! of the ops before it. The path is the list of branch decisions in depth-first order.

use std::cmp::Ordering;

use synod_api::EtcdError;
use synod_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use synod_api::etcdserverpb::{Compare, RequestOp, TxnRequest, request_op};
use synod_api::mvccpb::KeyValue;

use crate::backend::{BackendError, RevisionRead};
use crate::range::kvs_at;
use crate::tree_index::{KeyRange, TreeIndex};

/// The result of a check: a backend failure, or the client's verdict.
type Checked = Result<Result<(), EtcdError>, BackendError>;

/// A read-only view of the store at one revision, for compares and checks.
pub struct View<'a, B> {
    pub index: &'a TreeIndex,
    pub backend: &'a B,
    pub revision: i64,
    pub compacted: i64,
}

impl<B: RevisionRead> View<'_, B> {
    fn kvs(&self, key: &[u8], range_end: &[u8]) -> Result<Vec<KeyValue>, BackendError> {
        kvs_at(self.index, self.backend, &KeyRange::new(key, range_end), self.revision)
    }

    /// The branch decisions of `txn` and every nested txn on the chosen branches.
    pub fn path(&self, txn: &TxnRequest) -> Result<Vec<bool>, BackendError> {
        let mut path = Vec::new();
        self.path_into(txn, &mut path)?;
        Ok(path)
    }

    fn path_into(&self, txn: &TxnRequest, path: &mut Vec<bool>) -> Result<(), BackendError> {
        let mut succeeded = true;
        for compare in &txn.compare {
            if !self.compare(compare)? {
                succeeded = false;
                break;
            }
        }
        path.push(succeeded);
        for op in branch(txn, succeeded) {
            if let Some(request_op::Request::RequestTxn(nested)) = &op.request {
                self.path_into(nested, path)?;
            }
        }
        Ok(())
    }

    fn compare(&self, compare: &Compare) -> Result<bool, BackendError> {
        let kvs = self.kvs(&compare.key, &compare.range_end)?;
        if kvs.is_empty() {
            // A value compare on a missing key always fails: proto3 cannot tell an empty
            // value from no value.
            if compare.target == CompareTarget::Value as i32 {
                return Ok(false);
            }
            return Ok(compare_kv(compare, &KeyValue::default()));
        }
        Ok(kvs.iter().all(|kv| compare_kv(compare, kv)))
    }

    /// Checks the ops on `path` before anything is written: puts that need an existing key
    /// or lease (only for Txns that write), and range revisions.
    ///
    /// A put with `ignore_value` or `ignore_lease` needs its key to exist when it runs, so
    /// the check follows the deletes that run before it on the path. etcd checks only the
    /// store before the Txn, and a delete to the end of the keyspace (`"\0"`), which its
    /// duplicate-key check lets through, then makes such a put fail half-way through the
    /// Txn and etcd panic on every replay of that log entry. synod refuses the Txn instead.
    pub fn check(
        &self,
        txn: &TxnRequest,
        path: &[bool],
        writes: bool,
        lease_exists: &dyn Fn(i64) -> bool,
    ) -> Checked {
        if writes {
            let mut deleted: Vec<(&[u8], &[u8])> = Vec::new();
            let puts = self.check_ops(txn, path, &mut |op| match &op.request {
                Some(request_op::Request::RequestDeleteRange(d)) => {
                    deleted.push((d.key.as_slice(), d.range_end.as_slice()));
                    Ok(Ok(()))
                }
                _ => self.check_put(op, &deleted, lease_exists),
            })?;
            if let Err(e) = puts {
                return Ok(Err(e));
            }
        }
        self.check_ops(txn, path, &mut |op| Ok(self.check_range(op)))
    }

    fn check_ops<'t>(
        &self,
        txn: &'t TxnRequest,
        path: &[bool],
        check: &mut dyn FnMut(&'t RequestOp) -> Checked,
    ) -> Checked {
        let mut rest = &path[1..];
        for op in branch(txn, path[0]) {
            if let Some(request_op::Request::RequestTxn(nested)) = &op.request {
                if let Err(e) = self.check_ops(nested, rest, check)? {
                    return Ok(Err(e));
                }
                rest = &rest[path_len(nested, rest)..];
            } else if let Err(e) = check(op)? {
                return Ok(Err(e));
            }
        }
        Ok(Ok(()))
    }

    fn check_put(
        &self,
        op: &RequestOp,
        deleted: &[(&[u8], &[u8])],
        lease_exists: &dyn Fn(i64) -> bool,
    ) -> Checked {
        let Some(request_op::Request::RequestPut(put)) = &op.request else {
            return Ok(Ok(()));
        };
        if put.ignore_value || put.ignore_lease {
            let deleted_before = deleted.iter().any(|(key, end)| KeyRange::new(key, end).contains(&put.key));
            if deleted_before || self.kvs(&put.key, &[])?.is_empty() {
                return Ok(Err(EtcdError::KeyNotFound));
            }
        }
        if put.lease != 0 && !lease_exists(put.lease) {
            return Ok(Err(EtcdError::LeaseNotFound));
        }
        Ok(Ok(()))
    }

    fn check_range(&self, op: &RequestOp) -> Result<(), EtcdError> {
        let Some(request_op::Request::RequestRange(range)) = &op.request else {
            return Ok(());
        };
        match range.revision {
            0 => Ok(()),
            r if r > self.revision => Err(EtcdError::FutureRev),
            // Compared with the compaction revision directly, so a negative revision fails
            // as compacted inside a Txn though it means "newest" in a plain Range: etcd's
            // `checkRequestRange`.
            r if r < self.compacted => Err(EtcdError::Compacted),
            _ => Ok(()),
        }
    }
}

/// The ops a txn runs for a branch decision.
pub fn branch(txn: &TxnRequest, succeeded: bool) -> &[RequestOp] {
    if succeeded { &txn.success } else { &txn.failure }
}

/// How many entries of `path` belong to `txn` (itself and its nested txns).
pub fn path_len(txn: &TxnRequest, path: &[bool]) -> usize {
    let mut len = 1;
    for op in branch(txn, path[0]) {
        if let Some(request_op::Request::RequestTxn(nested)) = &op.request {
            len += path_len(nested, &path[len..]);
        }
    }
    len
}

/// Whether a txn only reads, on both branches (nested txns count as writes, as in etcd).
pub fn is_read_only(txn: &TxnRequest) -> bool {
    txn.success
        .iter()
        .chain(&txn.failure)
        .all(|op| matches!(op.request, Some(request_op::Request::RequestRange(_))))
}

/// Whether a txn writes with a put on either branch at its top level; such a txn is refused
/// while the NOSPACE alarm is raised (etcd's quota cost counts top-level puts only).
pub fn has_top_level_put(txn: &TxnRequest) -> bool {
    txn.success
        .iter()
        .chain(&txn.failure)
        .any(|op| matches!(op.request, Some(request_op::Request::RequestPut(_))))
}

/// etcd's `compareKV`. A target whose union field holds another kind compares against zero
/// (or the empty value); unknown targets compare as equal, unknown results as true.
fn compare_kv(compare: &Compare, kv: &KeyValue) -> bool {
    let int_target = |want: fn(&TargetUnion) -> Option<i64>| -> i64 {
        compare.target_union.as_ref().and_then(want).unwrap_or(0)
    };
    let ordering = match CompareTarget::try_from(compare.target) {
        Ok(CompareTarget::Value) => {
            let empty = Vec::new();
            let want = match &compare.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &empty,
            };
            kv.value.as_slice().cmp(want.as_slice())
        }
        Ok(CompareTarget::Create) => kv.create_revision.cmp(&int_target(|t| match t {
            TargetUnion::CreateRevision(r) => Some(*r),
            _ => None,
        })),
        Ok(CompareTarget::Mod) => kv.mod_revision.cmp(&int_target(|t| match t {
            TargetUnion::ModRevision(r) => Some(*r),
            _ => None,
        })),
        Ok(CompareTarget::Version) => kv.version.cmp(&int_target(|t| match t {
            TargetUnion::Version(r) => Some(*r),
            _ => None,
        })),
        Ok(CompareTarget::Lease) => kv.lease.cmp(&int_target(|t| match t {
            TargetUnion::Lease(r) => Some(*r),
            _ => None,
        })),
        Err(_) => Ordering::Equal,
    };
    match CompareResult::try_from(compare.result) {
        Ok(CompareResult::Equal) => ordering == Ordering::Equal,
        Ok(CompareResult::NotEqual) => ordering != Ordering::Equal,
        Ok(CompareResult::Greater) => ordering == Ordering::Greater,
        Ok(CompareResult::Less) => ordering == Ordering::Less,
        Err(_) => true,
    }
}
