//! Where the state machine keeps its records: one record per change, keyed by [`Rev`].
//!
//! The state machine keeps only the key index in memory; every value lives in a backend. The
//! server's backend is a redb table (synod-storage); [`MemBackend`] is the in-memory one for
//! tests and fixtures. A backend error during apply is fatal for the member: the apply is not
//! atomic in memory, so the member must stop and rebuild its state from disk.

use std::collections::BTreeMap;

use synod_api::mvccpb::KeyValue;
use synod_api::synodpb::{AuthState, CounterSession, LeaseRecord};

use crate::Rev;

/// One stored change: the key-value as etcd stores it, and whether it is a deletion marker.
/// A tombstone's `kv` holds only the key, as in etcd.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredKv {
    pub kv: KeyValue,
    pub tombstone: bool,
}

/// A backend failure. Never a client error: the caller stops serving from this member.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("storage I/O failed: {0}")]
    Io(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("corrupt record at revision {rev}: {detail}")]
    Corrupt { rev: Rev, detail: String },
    #[error("the key index refers to revision {0}, which the backend does not hold")]
    Missing(Rev),
}

/// Reads records by revision from a consistent view of the backend.
pub trait RevisionRead {
    fn get(&self, rev: Rev) -> Result<Option<StoredKv>, BackendError>;
}

/// Writes records within one backend transaction; reads through it see its own writes.
pub trait RevisionWrite: RevisionRead {
    fn put(&mut self, rev: Rev, record: &StoredKv) -> Result<(), BackendError>;
    fn delete(&mut self, rev: Rev) -> Result<(), BackendError>;
    /// Stores a lease (a grant, or a new checkpoint).
    fn put_lease(&mut self, record: &LeaseRecord) -> Result<(), BackendError>;
    fn delete_lease(&mut self, id: i64) -> Result<(), BackendError>;
    /// Stores a counter session (see [`crate::counter`]).
    fn put_session(&mut self, session: &CounterSession) -> Result<(), BackendError>;
    fn delete_session(&mut self, lease: i64) -> Result<(), BackendError>;
    /// Stores the auth state (users, roles, whether auth is on), replacing the last one.
    fn put_auth(&mut self, state: &AuthState) -> Result<(), BackendError>;
}

/// An in-memory backend for tests and fixtures.
#[derive(Clone, Debug, Default)]
pub struct MemBackend {
    records: BTreeMap<Rev, StoredKv>,
    leases: BTreeMap<i64, LeaseRecord>,
    sessions: BTreeMap<i64, CounterSession>,
    auth: Option<AuthState>,
}

impl MemBackend {
    /// Every record, in revision order.
    pub fn records(&self) -> impl Iterator<Item = (&Rev, &StoredKv)> {
        self.records.iter()
    }

    /// Every stored lease, in id order.
    pub fn leases(&self) -> impl Iterator<Item = &LeaseRecord> {
        self.leases.values()
    }

    /// Every stored counter session, in lease order.
    pub fn sessions(&self) -> impl Iterator<Item = &CounterSession> {
        self.sessions.values()
    }

    /// The stored auth state, if any was stored.
    pub fn auth(&self) -> Option<&AuthState> {
        self.auth.as_ref()
    }
}

impl RevisionRead for MemBackend {
    fn get(&self, rev: Rev) -> Result<Option<StoredKv>, BackendError> {
        Ok(self.records.get(&rev).cloned())
    }
}

impl RevisionWrite for MemBackend {
    fn put(&mut self, rev: Rev, record: &StoredKv) -> Result<(), BackendError> {
        self.records.insert(rev, record.clone());
        Ok(())
    }

    fn delete(&mut self, rev: Rev) -> Result<(), BackendError> {
        self.records.remove(&rev);
        Ok(())
    }

    fn put_lease(&mut self, record: &LeaseRecord) -> Result<(), BackendError> {
        self.leases.insert(record.id, *record);
        Ok(())
    }

    fn delete_lease(&mut self, id: i64) -> Result<(), BackendError> {
        self.leases.remove(&id);
        Ok(())
    }

    fn put_session(&mut self, session: &CounterSession) -> Result<(), BackendError> {
        self.sessions.insert(session.lease, session.clone());
        Ok(())
    }

    fn delete_session(&mut self, lease: i64) -> Result<(), BackendError> {
        self.sessions.remove(&lease);
        Ok(())
    }

    fn put_auth(&mut self, state: &AuthState) -> Result<(), BackendError> {
        self.auth = Some(state.clone());
        Ok(())
    }
}
