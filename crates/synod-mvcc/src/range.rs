//! Range execution, split in two so that the key index is locked only briefly: a
//! [`RangePlan`] is made from the index (which revisions to read), then executed against a
//! backend snapshot (read the records, filter, sort, truncate).
//!
//! The option handling is etcd's `applierV3backend.Range`: with sorting or revision filters
//! the whole range is fetched and truncated afterwards; otherwise one record more than the
//! limit is fetched to know whether there are `more`. `count` is always the whole range's
//! count at the read revision, unaffected by limit and filters.

use std::cmp::Ordering;

use synod_api::EtcdError;
use synod_api::etcdserverpb::range_request::{SortOrder, SortTarget};
use synod_api::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use synod_api::mvccpb::KeyValue;

use crate::Rev;
use crate::backend::{BackendError, RevisionRead};
use crate::tree_index::{KeyRange, TreeIndex};

/// What a Range will read: made under the index lock, executed without it.
#[derive(Debug)]
pub struct RangePlan {
    revs: Vec<Rev>,
    count: usize,
    /// The store revision the response header reports.
    current: i64,
    request: RangeOptions,
}

#[derive(Debug)]
struct RangeOptions {
    limit: i64,
    /// The raw enum numbers: etcd treats unknown values in its own way (see `sort`).
    sort_order: i32,
    sort_target: i32,
    keys_only: bool,
    min_mod_revision: i64,
    max_mod_revision: i64,
    min_create_revision: i64,
    max_create_revision: i64,
}

/// Plans `request` against `index` whose newest revision is `current` and whose oldest
/// readable revision is `compacted`.
pub fn plan(
    index: &TreeIndex,
    request: &RangeRequest,
    current: i64,
    compacted: i64,
) -> Result<RangePlan, EtcdError> {
    let at = read_revision(request.revision, current, compacted)?;
    let filtered = request.min_mod_revision != 0
        || request.max_mod_revision != 0
        || request.min_create_revision != 0
        || request.max_create_revision != 0;
    let fetch_limit = if request.sort_order != SortOrder::None as i32 || filtered || request.limit <= 0 {
        0
    } else {
        // One extra record tells whether there are more.
        usize::try_from(request.limit).unwrap_or(usize::MAX).saturating_add(1)
    };
    let range = KeyRange::new(&request.key, &request.range_end);
    let (revs, count) = if request.count_only {
        (Vec::new(), index.revisions(&range, at, 1).1)
    } else {
        index.revisions(&range, at, fetch_limit)
    };
    Ok(RangePlan {
        revs,
        count,
        current,
        request: RangeOptions {
            limit: request.limit,
            sort_order: request.sort_order,
            sort_target: request.sort_target,
            keys_only: request.keys_only,
            min_mod_revision: request.min_mod_revision,
            max_mod_revision: request.max_mod_revision,
            min_create_revision: request.min_create_revision,
            max_create_revision: request.max_create_revision,
        },
    })
}

/// The revision a read at `requested` sees: the newest for `requested <= 0`.
pub fn read_revision(requested: i64, current: i64, compacted: i64) -> Result<i64, EtcdError> {
    if requested > current {
        return Err(EtcdError::FutureRev);
    }
    let at = if requested <= 0 { current } else { requested };
    if at < compacted {
        return Err(EtcdError::Compacted);
    }
    Ok(at)
}

impl RangePlan {
    /// Reads the planned records from `backend`, which must be at least as new as the index
    /// the plan was made from.
    pub fn execute(self, backend: &impl RevisionRead) -> Result<RangeResponse, BackendError> {
        let mut kvs = fetch(backend, &self.revs)?;
        let o = &self.request;
        if o.max_mod_revision != 0 {
            kvs.retain(|kv| kv.mod_revision <= o.max_mod_revision);
        }
        if o.min_mod_revision != 0 {
            kvs.retain(|kv| kv.mod_revision >= o.min_mod_revision);
        }
        if o.max_create_revision != 0 {
            kvs.retain(|kv| kv.create_revision <= o.max_create_revision);
        }
        if o.min_create_revision != 0 {
            kvs.retain(|kv| kv.create_revision >= o.min_create_revision);
        }
        sort(&mut kvs, o.sort_order, o.sort_target);
        let mut more = false;
        if o.limit > 0 && kvs.len() as i64 > o.limit {
            kvs.truncate(o.limit as usize);
            more = true;
        }
        if o.keys_only {
            for kv in &mut kvs {
                kv.value.clear();
            }
        }
        Ok(RangeResponse {
            header: Some(ResponseHeader { revision: self.current, ..Default::default() }),
            kvs,
            more,
            count: self.count as i64,
        })
    }
}

/// Sorts like etcd. Records arrive in key order; a sort on another target with no order
/// given is ascending. The sort is stable, which matches etcd's (Go's insertion sort) for up
/// to 12 records; beyond that etcd's order among equal values is unspecified.
///
/// Unknown enum numbers: an unknown order sorts nothing (etcd fetches everything and then
/// matches neither ascending nor descending); an unknown target sorts nothing either (etcd
/// would dereference a nil sorter and crash).
fn sort(kvs: &mut [KeyValue], order: i32, target: i32) {
    let order = if order == SortOrder::None as i32 && target != SortTarget::Key as i32 {
        SortOrder::Ascend as i32
    } else {
        order
    };
    let (Ok(order), Ok(target)) = (SortOrder::try_from(order), SortTarget::try_from(target)) else {
        return;
    };
    let compare = |a: &KeyValue, b: &KeyValue| -> Ordering {
        match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        }
    };
    match order {
        SortOrder::Ascend => kvs.sort_by(compare),
        SortOrder::Descend => kvs.sort_by(|a, b| compare(b, a)),
        SortOrder::None => {}
    }
}

/// Reads the records at `revs`; a revision the index knows but the backend lacks means the
/// two disagree, which is corruption.
pub fn fetch(backend: &impl RevisionRead, revs: &[Rev]) -> Result<Vec<KeyValue>, BackendError> {
    revs.iter()
        .map(|&rev| match backend.get(rev)? {
            Some(stored) if !stored.tombstone => Ok(stored.kv),
            Some(_) => {
                Err(BackendError::Corrupt { rev, detail: "expected a value, found a tombstone".into() })
            }
            None => Err(BackendError::Missing(rev)),
        })
        .collect()
}

/// The records of the keys in `range` as of `at`, in key order.
pub fn kvs_at(
    index: &TreeIndex,
    backend: &impl RevisionRead,
    range: &KeyRange<'_>,
    at: i64,
) -> Result<Vec<KeyValue>, BackendError> {
    let (revs, _) = index.revisions(range, at, 0);
    fetch(backend, &revs)
}
