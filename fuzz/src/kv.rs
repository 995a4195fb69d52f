//! One member's key-value state, driven as synod-server drives it, with synod's invariants
//! checked after every request.
//!
//! Requests take the server's path (`crates/synod-server/src/api.rs`): synod-mvcc's
//! request checks first (a Txn against `TXN_OPS_DEFAULT`), then a write is applied as the
//! `Command` the log would carry, a Range is planned and executed, and a read-only Txn is
//! served without the log. A raw `Command` skips the server's checks, as a log entry from a
//! buggy or hostile peer does; the state machine must then refuse it on its own.
//!
//! The store is `KvStore` on `MemBackend`, as synod-mvcc's fixtures run it
//! (`crates/synod-mvcc/tests/fixtures.rs`): with no disk there is no backend error to
//! expect, so one is a disagreement between the key index and the records, a bug.

use synod_api::EtcdError;
use synod_api::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest, RangeResponse,
    TxnRequest,
};
use synod_api::synodpb::{Command, command};
use synod_base::limits;
use synod_mvcc::{Applied, BackendError, KvStore, Lease, MemBackend, check};

/// A command as the server proposes it with auth off: an op and no auth user. Built with
/// `..Default::default()` so that fields added to `Command` later keep their defaults here.
pub fn command(op: command::Op) -> Command {
    Command { op: Some(op), ..Default::default() }
}

pub struct Member {
    store: KvStore,
    backend: MemBackend,
}

impl Member {
    /// A store with some history, so that requests meet what a running member holds: keys
    /// with several versions, a deletion, a lease with a key, a counter, and a compaction
    /// that removed the oldest revisions.
    pub fn with_history() -> Member {
        let mut member = Member { store: KvStore::new(), backend: MemBackend::default() };
        let put = |key: &str, value: &str, lease: i64| {
            command::Op::Put(PutRequest { key: key.into(), value: value.into(), lease, ..Default::default() })
        };
        for op in [
            put("a", "1", 0),
            put("b", "2", 0),
            put("c", "3", 0),
            put("a", "10", 0),
            command::Op::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 7 }),
            put("leased", "x", 7),
            command::Op::DeleteRange(DeleteRangeRequest { key: "b".into(), ..Default::default() }),
            put("counter", "41", 0),
            put("k/1", "p", 0),
            put("k/2", "q", 0),
            command::Op::Compaction(CompactionRequest { revision: 3, physical: false }),
        ] {
            let applied = member.apply(&command(op));
            assert!(applied.is_ok(), "the starting history applies: {applied:?}");
        }
        member
    }

    pub fn current_revision(&self) -> i64 {
        self.store.current_revision()
    }

    /// A Range as the server serves it from the member's state.
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, EtcdError> {
        check::range(request)?;
        let plan = self.store.plan_range(request)?;
        let response = plan.execute(&self.backend).expect("the backend holds every record the index names");
        if request.limit > 0 {
            assert!(response.kvs.len() as i64 <= request.limit, "a Range returned more than its limit");
        }
        if request.count_only {
            assert!(response.kvs.is_empty(), "a count-only Range returned key-values");
        } else {
            assert!(
                response.count >= response.kvs.len() as i64,
                "a Range counted fewer keys than it returned"
            );
        }
        Ok(response)
    }

    pub fn put(&mut self, request: PutRequest) -> Applied {
        check::put(&request)?;
        self.apply(&command(command::Op::Put(request)))
    }

    pub fn delete_range(&mut self, request: DeleteRangeRequest) -> Applied {
        check::delete_range(&request)?;
        self.apply(&command(command::Op::DeleteRange(request)))
    }

    /// A Txn: checked as the server does, then read from the state or applied.
    pub fn txn(&mut self, request: TxnRequest) -> Applied {
        check::txn(&request, limits::TXN_OPS_DEFAULT as usize)?;
        if synod_mvcc::txn_is_read_only(&request) {
            let before = self.store.meta();
            let response = self
                .store
                .read_txn(&self.backend, &request)
                .expect("the backend holds every record the index names")?;
            assert_eq!(self.store.meta(), before, "a read-only Txn changed the store");
            return Ok(synod_mvcc::Response::Txn(response));
        }
        self.apply(&command(command::Op::Txn(request)))
    }

    /// Applies one log entry's command, as every member does, and checks the store after.
    pub fn apply(&mut self, command: &Command) -> Applied {
        let before = self.store.meta();
        let records_before = self.backend.records().count();
        let applied = self
            .store
            .apply(&mut self.backend, command)
            .expect("applying to an in-memory backend cannot fail unless index and records disagree");
        let after = self.store.meta();
        assert!(
            after.current_revision >= before.current_revision,
            "the revision went back from {} to {} applying {command:?}",
            before.current_revision,
            after.current_revision
        );
        assert!(
            after.compact_revision <= after.current_revision,
            "compacted at {} beyond the revision {}",
            after.compact_revision,
            after.current_revision
        );
        if applied.is_err() {
            // etcd's rule: a request that fails changes nothing.
            assert_eq!(after, before, "a refused {command:?} changed the store's meta");
            assert_eq!(self.backend.records().count(), records_before, "a refused {command:?} wrote records");
        }
        // A member deletes what compactions dropped a few records at a time, between
        // entries; 0 to 3 here, so that restarts meet every part-way state.
        let batch = (after.current_revision % 4) as usize;
        self.store
            .reclaim(&mut self.backend, batch)
            .expect("deleting records the index no longer names cannot fail in memory");
        self.check_backend();
        applied
    }

    /// The key index and the backend agree, and the backend stores the leases and counter
    /// sessions the store has (what a restart reads back).
    fn check_backend(&self) {
        let records = self.backend.records().count();
        if let Err(e) = self.store.check_backend(&self.backend, records) {
            panic!("the key index and the backend disagree: {e}");
        }
        assert!(
            self.backend.leases().eq(self.store.leases().records()),
            "the backend's leases are not the store's"
        );
        assert!(
            self.backend.sessions().eq(self.store.counter_sessions().iter()),
            "the backend's counter sessions are not the store's"
        );
    }

    /// A member that restarts rebuilds its store from the persisted meta and records; it
    /// must come back to the state it had (what the fixtures' `restart` checks).
    pub fn check_restart(&self) {
        let records =
            self.backend.records().map(|(rev, stored)| Ok::<_, BackendError>((*rev, stored.clone())));
        let leases = self.backend.leases().map(|lease| Ok(*lease));
        let sessions = self.backend.sessions().map(|session| Ok(session.clone()));
        let auth = self.backend.auth().cloned();
        // As the state file's marker does: deletions still to make are found again.
        let reclaiming = !self.store.unreclaimed().is_empty();
        let restarted = match KvStore::restore(self.store.meta(), records, leases, sessions, auth, reclaiming)
        {
            Ok(store) => store,
            Err(e) => panic!("a store does not restart on the records it wrote: {e}"),
        };
        assert_eq!(restarted.meta(), self.store.meta(), "a restart changed the meta");
        assert_eq!(
            everything(&restarted, &self.backend),
            everything(&self.store, &self.backend),
            "a restart changed what a Range returns"
        );
        assert_eq!(leases_of(&restarted), leases_of(&self.store), "a restart changed the leases");
        assert!(
            restarted.counter_sessions().iter().eq(self.store.counter_sessions().iter()),
            "a restart changed the counter sessions"
        );
        assert_eq!(restarted.auth().state(), self.store.auth().state(), "a restart changed the auth state");
    }
}

/// Every key at the newest revision.
fn everything(store: &KvStore, backend: &MemBackend) -> RangeResponse {
    let request = RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() };
    let plan = store.plan_range(&request).expect("a Range of every key at the newest revision plans");
    plan.execute(backend).expect("the backend holds every record the index names")
}

fn leases_of(store: &KvStore) -> Vec<Lease> {
    store
        .leases()
        .records()
        .map(|record| store.leases().get(record.id).expect("a listed lease exists").clone())
        .collect()
}
