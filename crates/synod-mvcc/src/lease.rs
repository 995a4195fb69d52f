//! Leases as the replicated state keeps them: each lease's granted TTL, the remaining time
//! the leader last checkpointed, and the keys attached to it.
//!
//! Time is not here: only the leader tracks when a lease expires, and it revokes an expired
//! lease through the log like any client would. What every member agrees on is which leases
//! exist and which keys go when one is revoked.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use synod_api::synodpb::LeaseRecord;

/// The longest TTL a lease may have, in seconds (etcd's `MaxLeaseTTL`).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// One lease: its stored record and the keys attached to it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Lease {
    pub record: LeaseRecord,
    pub keys: BTreeSet<Vec<u8>>,
}

#[derive(Clone, Debug, Default)]
pub struct Leases {
    leases: BTreeMap<i64, Lease>,
    /// The lease of every key that has one, so that a put or delete finds the lease to
    /// detach from without reading the key's record.
    key_lease: HashMap<Vec<u8>, i64>,
    /// Counts grants and removals, so that the leader's lease keeper can tell cheaply
    /// whether the set of leases changed.
    generation: u64,
}

impl Leases {
    pub fn get(&self, id: i64) -> Option<&Lease> {
        self.leases.get(&id)
    }

    pub fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    pub fn records(&self) -> impl Iterator<Item = &LeaseRecord> {
        self.leases.values().map(|lease| &lease.record)
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Changes whenever a lease is granted or removed.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn insert(&mut self, record: LeaseRecord) {
        self.generation += 1;
        self.leases.insert(record.id, Lease { record, keys: BTreeSet::new() });
    }

    /// Removes a lease and returns the keys that were attached to it, in key order.
    pub(crate) fn remove(&mut self, id: i64) -> Option<BTreeSet<Vec<u8>>> {
        let lease = self.leases.remove(&id)?;
        self.generation += 1;
        for key in &lease.keys {
            self.key_lease.remove(key);
        }
        Some(lease.keys)
    }

    /// Sets a lease's checkpointed remaining time; returns its record if the lease exists.
    pub(crate) fn checkpoint(&mut self, id: i64, remaining_ms: i64) -> Option<&LeaseRecord> {
        let lease = self.leases.get_mut(&id)?;
        lease.record.remaining_ms = remaining_ms.max(0);
        Some(&lease.record)
    }

    /// Attaches `key` to `lease` (0 for none), detaching it from the lease it had. A key
    /// whose lease does not exist stays detached, as etcd leaves it on restore.
    pub(crate) fn attach(&mut self, key: &[u8], lease: i64) {
        self.detach(key);
        if lease == 0 {
            return;
        }
        if let Some(l) = self.leases.get_mut(&lease) {
            l.keys.insert(key.to_vec());
            self.key_lease.insert(key.to_vec(), lease);
        }
    }

    pub(crate) fn detach(&mut self, key: &[u8]) {
        if let Some(old) = self.key_lease.remove(key)
            && let Some(l) = self.leases.get_mut(&old)
        {
            l.keys.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(id: i64) -> LeaseRecord {
        LeaseRecord { id, ttl: 10, remaining_ms: 0 }
    }

    #[test]
    fn a_key_belongs_to_one_lease_at_a_time() {
        let mut leases = Leases::default();
        leases.insert(lease(1));
        leases.insert(lease(2));
        leases.attach(b"k", 1);
        leases.attach(b"k", 2);
        assert!(leases.get(1).unwrap().keys.is_empty());
        assert_eq!(leases.get(2).unwrap().keys.len(), 1);
        leases.attach(b"k", 0);
        assert!(leases.get(2).unwrap().keys.is_empty());
    }

    #[test]
    fn removing_a_lease_forgets_its_keys() {
        let mut leases = Leases::default();
        leases.insert(lease(1));
        leases.attach(b"a", 1);
        leases.attach(b"b", 1);
        let keys = leases.remove(1).unwrap();
        assert_eq!(keys.into_iter().collect::<Vec<_>>(), vec![b"a".to_vec(), b"b".to_vec()]);
        // A lease granted again with the same id starts without keys.
        leases.insert(lease(1));
        leases.detach(b"a");
        assert!(leases.get(1).unwrap().keys.is_empty());
    }

    #[test]
    fn unknown_leases_attach_nothing() {
        let mut leases = Leases::default();
        leases.attach(b"k", 7);
        leases.insert(lease(7));
        assert!(leases.get(7).unwrap().keys.is_empty());
    }

    #[test]
    fn checkpoints_never_go_negative() {
        let mut leases = Leases::default();
        leases.insert(lease(1));
        assert_eq!(leases.checkpoint(1, -5).unwrap().remaining_ms, 0);
        assert!(leases.checkpoint(2, 5).is_none());
    }
}
