//! [`Unreclaimed`]: the records a compaction dropped that the backend still holds.
//!
//! Compaction changes the key index first (no read can see a dropped revision after it
//! applies; see `IndexPass` for the pass that finds them, a slice of keys at a time), but
//! deletes the dropped records later, a batch at a time, as etcd's `scheduleCompaction`
//! does: deleting a large history in the compaction's own apply would stall every write
//! behind it. Readers that scan the backend's records directly (HashKV, snapshots, watch
//! history) finish the pass and then skip the revisions still listed here, so what they see
//! does not depend on how far the deletion has got on this member.

use std::sync::Arc;

use crate::Rev;

/// Dropped revisions in order, the first `next` already deleted. Cheap to clone: a reader
/// takes a copy together with its backend snapshot, and the copy stays exact for that
/// snapshot (deletions only ever remove records the copy still lists).
#[derive(Clone, Debug, Default)]
pub struct Unreclaimed {
    revs: Arc<Vec<Rev>>,
    next: usize,
}

impl Unreclaimed {
    /// Dropped revisions not yet deleted.
    pub fn len(&self) -> usize {
        self.revs.len() - self.next
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `rev` was dropped and is not yet deleted.
    pub fn contains(&self, rev: Rev) -> bool {
        self.revs[self.next..].binary_search(&rev).is_ok()
    }

    /// Adds the revisions a new compaction dropped.
    pub(crate) fn add(&mut self, dropped: Vec<Rev>) {
        if dropped.is_empty() {
            return;
        }
        let mut revs = Vec::with_capacity(self.len() + dropped.len());
        revs.extend_from_slice(&self.revs[self.next..]);
        revs.extend(dropped);
        revs.sort_unstable();
        revs.dedup();
        *self = Unreclaimed { revs: Arc::new(revs), next: 0 };
    }

    /// The next (at most `max`) revisions to delete.
    pub(crate) fn batch(&self, max: usize) -> &[Rev] {
        let end = self.revs.len().min(self.next.saturating_add(max));
        &self.revs[self.next..end]
    }

    /// Marks the first `count` revisions of the last batch deleted.
    pub(crate) fn advance(&mut self, count: usize) {
        self.next = (self.next + count).min(self.revs.len());
        if self.next == self.revs.len() {
            *self = Unreclaimed::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revs(mains: &[i64]) -> Vec<Rev> {
        mains.iter().map(|&m| Rev::new(m, 0)).collect()
    }

    /// Batches come out in revision order, a copy taken before a deletion still lists what
    /// its snapshot holds, and a second compaction merges into what is left.
    #[test]
    fn batches_in_order_and_copies_stay_exact() {
        let mut unreclaimed = Unreclaimed::default();
        unreclaimed.add(revs(&[7, 3, 5]));
        assert_eq!(unreclaimed.batch(2), revs(&[3, 5]).as_slice());
        let copy = unreclaimed.clone();
        unreclaimed.advance(2);
        assert!(copy.contains(Rev::new(3, 0)), "the copy's snapshot still holds 3");
        assert!(!unreclaimed.contains(Rev::new(3, 0)));
        assert!(unreclaimed.contains(Rev::new(7, 0)));
        unreclaimed.add(revs(&[4, 9]));
        assert_eq!(unreclaimed.batch(10), revs(&[4, 7, 9]).as_slice());
        unreclaimed.advance(3);
        assert!(unreclaimed.is_empty());
        assert_eq!(unreclaimed.batch(10), &[] as &[Rev]);
    }
}
